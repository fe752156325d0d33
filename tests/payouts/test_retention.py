"""Nightly retention: old and finished rows go in bounded batches; money and audit stay."""

from datetime import timedelta
from itertools import count

import pytest
from django.utils import timezone

from core.metrics import SharedMetricsCollector
from core.models import AuditEntry, DeadLetter
from core.services import audit_record
from ledger.models import Transfer
from notifications.models import Notification
from payouts.models import StripeEvent
from payouts.services.retention import RetentionReport, retention_run
from tests.conftest import run_together

_ids = count(1)


@pytest.fixture(autouse=True)
def _small_batches(settings, redis_client):
    settings.RETENTION_BATCH_SIZE = 2
    settings.RETENTION_NOTIFICATIONS_DAYS = 90
    settings.RETENTION_EVENTS_DAYS = 30
    for key in redis_client.scan_iter("metrics:*"):
        redis_client.delete(key)
    for key in redis_client.scan_iter("celery-task-meta-*"):
        redis_client.delete(key)


def days_ago(days: int):
    return timezone.now() - timedelta(days=days)


def notification(user, *, age_days: int, read: bool) -> Notification:
    note = Notification.objects.create(
        user=user,
        kind=Notification.Kind.PAYOUT_COMPLETED,
        title="t",
        dedup_key=f"test:{next(_ids)}",
    )
    Notification.objects.filter(pk=note.pk).update(
        created_at=days_ago(age_days), read_at=days_ago(age_days) if read else None
    )
    return note


def dead_letter(*, replayed_days_ago: int | None, age_days: int) -> DeadLetter:
    letter = DeadLetter.objects.create(
        task_id=f"retention-{next(_ids)}", task_name="t", error="e", attempts=1
    )
    DeadLetter.objects.filter(pk=letter.pk).update(
        created_at=days_ago(age_days),
        status="replayed" if replayed_days_ago is not None else "open",
        replayed_at=days_ago(replayed_days_ago) if replayed_days_ago is not None else None,
    )
    return letter


def stripe_event(*, age_days: int) -> StripeEvent:
    event = StripeEvent.objects.create(event_id=f"evt_{next(_ids)}", type="x", payload={})
    StripeEvent.objects.filter(pk=event.pk).update(received_at=days_ago(age_days))
    return event


def old_and_new_rows(make_user) -> dict[str, set[int]]:
    """What must go and what must stay, per table."""
    user = make_user(balance=500)  # a deposit: one ledger transfer and one audit entry
    audit_record(actor=None, action="test.old", target_type="t", target_id=1)
    AuditEntry.objects.update(created_at=days_ago(400))
    return {
        "gone_notifications": {notification(user, age_days=100, read=True).pk for _ in range(5)},
        "kept_notifications": {
            notification(user, age_days=100, read=False).pk,  # never seen: kept however old
            notification(user, age_days=10, read=True).pk,
        },
        "gone_letters": {dead_letter(replayed_days_ago=40, age_days=50).pk for _ in range(3)},
        "kept_letters": {
            dead_letter(replayed_days_ago=5, age_days=50).pk,
            dead_letter(replayed_days_ago=None, age_days=300).pk,  # open: waits for staff
        },
        "gone_events": {stripe_event(age_days=31).pk for _ in range(3)},
        "kept_events": {stripe_event(age_days=29).pk},
    }


def remaining(model) -> set[int]:
    return set(model.objects.values_list("pk", flat=True))


def retention_counted() -> dict[str, float]:
    family = next(
        m for m in SharedMetricsCollector().collect() if m.name == "stakehold_retention_deleted"
    )
    return {s.labels["kind"]: s.value for s in family.samples}


@pytest.mark.django_db
def test_retention_deletes_what_is_old_and_done_and_keeps_money_and_audit(make_user, redis_client):
    # Given old and recent rows of every kind, and task results with and without an expiry
    rows = old_and_new_rows(make_user)
    transfers, audit = remaining(Transfer), remaining(AuditEntry)
    redis_client.set("celery-task-meta-forever", "{}")
    redis_client.set("celery-task-meta-expiring", "{}", ex=100)

    # When the retention runs
    report = retention_run()

    # Then exactly the old, finished rows are gone
    assert report == RetentionReport(
        notifications=5, dead_letters=3, stripe_events=3, task_results=1
    )
    assert remaining(Notification) == rows["kept_notifications"]
    assert remaining(DeadLetter) == rows["kept_letters"]
    assert remaining(StripeEvent) == rows["kept_events"]
    # And ledger transfers and the audit trail are untouched, however old
    assert (remaining(Transfer), remaining(AuditEntry)) == (transfers, audit)
    # And a result without an expiry now expires like the others; the rest keep theirs
    assert 0 < redis_client.ttl("celery-task-meta-forever") <= 3600
    assert 0 < redis_client.ttl("celery-task-meta-expiring") <= 100
    # And the counts are in the metrics
    assert retention_counted() == {
        "notifications": 5,
        "dead_letters": 3,
        "stripe_events": 3,
        "task_results": 1,
    }

    # And a second run finds nothing more
    assert retention_run() == RetentionReport(0, 0, 0, 0)


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_delete_each_row_once(make_user):
    # Given old rows of every kind (committed, so both runs see them)
    rows = old_and_new_rows(make_user)

    # When two retention runs start at the same moment (each on its own connection)
    first, second = run_together(retention_run, retention_run)

    # Then neither failed, together they deleted each old row once, and the rest stays
    assert isinstance(first, RetentionReport)
    assert isinstance(second, RetentionReport)
    assert first.notifications + second.notifications == 5
    assert first.dead_letters + second.dead_letters == 3
    assert first.stripe_events + second.stripe_events == 3
    assert remaining(Notification) == rows["kept_notifications"]
    assert remaining(DeadLetter) == rows["kept_letters"]
    assert remaining(StripeEvent) == rows["kept_events"]
