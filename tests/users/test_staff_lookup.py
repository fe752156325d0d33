"""Staff notifications find the staff through their own index (``users/0002``), not by reading
every user: the sweep's "needs resolution" and every platform alert do it, each minute."""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from challenges.services import challenges_sweep_deadlines
from notifications.models import Notification
from notifications.services import staff_notify
from proof.seeding import users_seed
from tests.challenges.helpers import active_challenge
from tests.plans import plan_reads

# Transactional: the crowd is seeded by ``users_seed``, which commits a transaction of its own.
pytestmark = pytest.mark.django_db(transaction=True)


def _crowd(count: int) -> None:
    """``count`` users who are not staff (seeded set-based), and the planner told about them."""
    users_seed(users=count, balance=1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE auth_user")


def _user_scans(sql: str) -> list[str]:
    """How the plan of ``sql`` reads ``auth_user``: one node type per read."""
    return [how for table, how in plan_reads(sql) if table == "auth_user"]


def _statement_naming(captured: CaptureQueriesContext, marker: str) -> str:
    (sql,) = [query["sql"] for query in captured.captured_queries if marker in query["sql"]]
    return sql


def test_a_platform_alert_reads_the_staff_not_every_user(make_user):
    # Given two staff among 20,000 users
    staff = [make_user("admin_a", staff=True), make_user("admin_b", staff=True)]
    _crowd(20_000)
    # When an alert notifies the staff
    with CaptureQueriesContext(connection) as captured:
        staff_notify(kind="platform_alert", title="t", body="b", data={}, dedup_key="alert:x")
    # Then each of them got it, and the statement looks them up by index, not by a scan
    assert set(Notification.objects.values_list("user", flat=True)) == {u.pk for u in staff}
    scans = _user_scans(_statement_naming(captured, "alert:x"))
    assert scans
    assert "Seq Scan" not in scans, scans


def test_the_sweep_reads_the_staff_not_every_user(make_user):
    # Given a staff member among 20,000 users, and a challenge that falls due
    admin = make_user("admin", staff=True)
    challenge, _ = active_challenge(make_user, due_in=timedelta(hours=1))
    _crowd(20_000)
    # When the sweep moves it to staff
    with (
        time_machine.travel(challenge.due_date, tick=False),
        CaptureQueriesContext(connection) as captured,
    ):
        assert challenges_sweep_deadlines().pending_admin == [challenge.pk]
    # Then the staff member is told, and the statement looks the staff up by index
    assert Notification.objects.filter(user=admin, kind="needs_resolution").count() == 1
    scans = _user_scans(_statement_naming(captured, "needs_resolution:"))
    assert scans
    assert "Seq Scan" not in scans, scans
