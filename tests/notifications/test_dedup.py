"""The dedup key is what makes every producer's retry harmless: the database holds it."""

import pytest
from django.db import IntegrityError, transaction

from notifications.models import Notification
from tests.notifications.helpers import notify

pytestmark = pytest.mark.django_db


def test_the_database_refuses_a_second_notification_with_the_same_key(make_user):
    # Given a stored notification
    user = make_user()
    (first,) = notify([user], key="once")
    row = Notification.objects.get(pk=first)
    # When a second row with its key is written past the producers' ON CONFLICT
    # Then the unique constraint refuses it
    with pytest.raises(IntegrityError), transaction.atomic():
        Notification.objects.create(
            user=user, kind=row.kind, title="again", dedup_key=row.dedup_key
        )
    assert Notification.objects.filter(dedup_key=row.dedup_key).count() == 1


def test_a_repeated_set_based_insert_adds_nothing_and_returns_no_ids(make_user):
    # Given notifications for three users
    users = [make_user() for _ in range(3)]
    assert len(notify(users, key="fanout")) == 3
    # When the same fan-out runs again, with one more user
    newcomer = make_user()
    again = notify([*users, newcomer], key="fanout")
    # Then only the newcomer's notification is new
    assert Notification.objects.get(pk__in=again).user_id == newcomer.pk
    assert Notification.objects.filter(dedup_key__startswith="fanout:").count() == 4
