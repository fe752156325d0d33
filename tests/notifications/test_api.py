import hashlib
import hmac
from urllib.parse import urlencode

import pytest

from notifications.models import Notification
from tests.notifications.helpers import notify

pytestmark = pytest.mark.django_db


def test_users_list_only_their_own_notifications_newest_first_paginated(make_user, client_for):
    me, other = make_user(), make_user()
    mine = [notify([me], key=f"k{i}")[0] for i in range(3)]
    notify([other], key="theirs")

    page = client_for(me).get("/api/notifications/?page_size=2").json()
    rest = client_for(me).get("/api/notifications/?page_size=2&page=2").json()

    assert page["count"] == 3
    assert [n["id"] for n in page["results"] + rest["results"]] == mine[::-1]
    assert page["results"][0]["read_at"] is None
    assert set(page["results"][0]) >= {"id", "kind", "title", "body", "priority", "created_at"}


def test_marking_read_and_filtering_unread(make_user, client_for):
    me = make_user()
    first, second = notify([me], key="a")[0], notify([me], key="b")[0]
    client = client_for(me)

    response = client.post(f"/api/notifications/{first}/read/")
    again = client.post(f"/api/notifications/{first}/read/")

    assert response.status_code == 200
    assert response.json()["read_at"] is not None
    assert again.json()["read_at"] == response.json()["read_at"]  # the first read time stays
    unread = client.get("/api/notifications/?unread=1").json()
    assert [n["id"] for n in unread["results"]] == [second]


def test_nobody_can_read_or_mark_someone_elses_notification(make_user, client_for):
    me, other = make_user(), make_user()
    theirs = notify([other])[0]

    response = client_for(me).post(f"/api/notifications/{theirs}/read/")

    assert (response.status_code, response.json()["code"]) == (404, "notification_not_found")
    assert Notification.objects.get(pk=theirs).read_at is None
    assert client_for(me).get("/api/notifications/").json()["count"] == 0


def test_anonymous_callers_get_nothing(client_for):
    assert client_for().get("/api/notifications/").status_code in {401, 403}
    assert client_for().post("/api/pusher/auth", {}).status_code in {401, 403}


def _auth(client, **form):
    """Post the form the way pusher-js does (application/x-www-form-urlencoded)."""
    return client.post(
        "/api/pusher/auth", urlencode(form), content_type="application/x-www-form-urlencoded"
    )


def _expected_auth(fake, socket_id: str, channel: str) -> str:
    signature = hmac.new(
        fake.secret.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{fake.key}:{signature}"


def test_pusher_auth_signs_the_callers_own_channel_from_a_form_or_json(
    make_user, client_for, pusher_fake
):
    me = make_user()
    channel = f"private-user-{me.pk}"
    client = client_for(me)

    form = _auth(client, socket_id="123.456", channel_name=channel)
    as_json = client.post(
        "/api/pusher/auth", {"socket_id": "123.456", "channel_name": channel}, format="json"
    )

    assert form.status_code == 200, form.json()
    assert form.json() == {"auth": _expected_auth(pusher_fake, "123.456", channel)}
    assert as_json.json() == form.json()


@pytest.mark.parametrize(
    "channel",
    ["private-user-{other}", "private-staff", "presence-user-{me}", "user-{me}", "private-user-"],
)
def test_pusher_auth_refuses_every_other_channel(make_user, client_for, pusher_fake, channel):
    me, other = make_user(), make_user()
    name = channel.format(me=me.pk, other=other.pk)

    response = _auth(client_for(me), socket_id="1.2", channel_name=name)

    assert (response.status_code, response.json()["code"]) == (403, "channel_forbidden")
    assert "auth" not in response.json()


def test_staff_may_also_subscribe_to_the_staff_channel(make_user, client_for, pusher_fake):
    staffer = make_user(staff=True)
    response = _auth(client_for(staffer), socket_id="9.9", channel_name="private-staff")
    assert response.json() == {"auth": _expected_auth(pusher_fake, "9.9", "private-staff")}


@pytest.mark.parametrize("socket_id", ["", "abc", "1.2;evil", "1.2.3", "1"])
def test_pusher_auth_rejects_malformed_socket_ids(make_user, client_for, pusher_fake, socket_id):
    me = make_user()
    response = _auth(client_for(me), socket_id=socket_id, channel_name=f"private-user-{me.pk}")
    assert (response.status_code, response.json()["code"]) == (400, "invalid_input")


def test_pusher_auth_without_credentials_is_a_clear_error(make_user, client_for):
    me = make_user()
    response = _auth(client_for(me), socket_id="1.2", channel_name=f"private-user-{me.pk}")
    assert (response.status_code, response.json()["code"]) == (503, "pusher_not_configured")
