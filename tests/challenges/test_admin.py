import pytest
from django.test import Client

from challenges.models import Challenge
from notifications.models import Notification
from tests.challenges.helpers import active_challenge
from tests.notifications.helpers import notify

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(make_user) -> Client:
    from users.services import user_create

    admin = user_create(
        username="root", password="pw-for-tests-1", is_superuser=True, validate=False
    )
    client = Client()
    client.force_login(admin)
    return client


def test_challenge_admin_lists_filters_searches_and_shows_stakes_read_only(make_user, admin_client):
    challenge, players = active_challenge(make_user, stakers=3)

    listing = admin_client.get("/admin/challenges/challenge/?status__exact=active&q=rain")
    by_due = admin_client.get("/admin/challenges/challenge/?due_date__gte=2000-01-01+00:00Z")
    page = admin_client.get(f"/admin/challenges/challenge/{challenge.pk}/change/")
    stakes = admin_client.get(f"/admin/challenges/stake/?challenge__id__exact={challenge.pk}")

    assert listing.status_code == by_due.status_code == page.status_code == 200
    assert challenge.title in listing.content.decode()
    html = page.content.decode()
    assert "Stakers (5; 50 a page)" in html
    assert players[2].username in html
    assert "5 stakes" in html
    assert 'name="_save"' not in html  # view only: state changes go through services
    assert stakes.status_code == 200
    assert admin_client.get("/admin/challenges/challenge/add/").status_code == 403


def test_notification_admin_can_requeue_undelivered_notifications(
    make_user, admin_client, redis_client
):
    ids = notify([make_user(), make_user()])
    redis_client.delete("notifications")

    response = admin_client.post(
        "/admin/notifications/notification/",
        {"action": "deliver_again", "_selected_action": [str(pk) for pk in ids]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Queued 2 notifications in 1 tasks." in response.content.decode()
    assert redis_client.llen("notifications") == 1
    redis_client.delete("notifications")
    assert admin_client.get("/admin/notifications/notification/?delivered=no").status_code == 200
    assert Notification.objects.count() == 2
    assert Challenge.objects.count() == 0
