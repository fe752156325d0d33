"""Operational alerts: each rule triggered for real, sent once per subject per hour to every
staff member (a notification and a ``private-staff`` event), to Sentry when configured, and
counted in ``stakehold_alerts_sent_total``."""

from datetime import timedelta

import pytest
import sentry_sdk
import time_machine
from celery import current_app
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from core.metrics import SharedMetricsCollector
from core.queues import queue_lists
from core.sentry import sentry_init
from core.services import dead_letter_record
from notifications.models import Notification
from notifications.tasks import staff_event_publish_task
from payouts.models import PayoutJob
from payouts.services.alerts import alert_send, alerts_evaluate, ops_alerts_check
from payouts.services.engine import payout_batch_ledger, payout_job_expand
from payouts.services.jobs import challenge_resolve
from payouts.services.stripe_rail import payout_batch_stripe
from proof.seeding import challenge_seed
from tests.fakes.sentry_server import FakeSentry
from tests.payouts.helpers import stripe_challenge_seed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _quiet_start(redis_client, settings, staff):
    """No alert of an earlier test is remembered, no queue holds old messages, and every
    periodic task ran just now, so each test sees only the condition it creates."""
    settings.PAYOUT_BATCH_SIZE = 3
    for pattern in ("alert:sent:*", "metrics:*", "workers:queue:*"):
        for key in redis_client.scan_iter(pattern):
            redis_client.delete(key)
    for queue in ("default", "payouts", "payouts_stripe", "scheduler", "notifications"):
        redis_client.delete(*queue_lists(queue))
    PeriodicTask.objects.update(last_run_at=timezone.now())


def rules(alerts, *only: str) -> set[tuple[str, str]]:
    return {(a.rule, a.subject) for a in alerts if not only or a.rule in only}


def alerts_counted() -> dict[tuple[str, ...], float]:
    family = next(
        m for m in SharedMetricsCollector().collect() if m.name == "stakehold_alerts_sent"
    )
    return {tuple(s.labels.values()): s.value for s in family.samples}


def queued_job(staff, *, seed: int) -> PayoutJob:
    challenge = challenge_seed(stakers=6, yes_share=0.5, seed=seed)
    return challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)


def test_a_job_running_too_long_alerts_every_staff_member_once_an_hour(
    staff, make_user, django_capture_on_commit_callbacks
):
    # Given a second staff member and a job that never got going
    other_staff = make_user("nightshift", staff=True)
    job = queued_job(staff, seed=1)
    start = timezone.now()

    # When the alerts are checked over an hour after the job was created
    with time_machine.travel(start + timedelta(seconds=3601), tick=False):
        with django_capture_on_commit_callbacks() as callbacks:
            sent = ops_alerts_check()
        again = ops_alerts_check()

    # Then each staff member gets one high-priority notification about that job
    assert rules(sent, "job_too_long") == {("job_too_long", f"payout_job:{job.pk}")}
    notes = Notification.objects.filter(
        kind=Notification.Kind.PLATFORM_ALERT, data__rule="job_too_long"
    )
    assert sorted(notes.values_list("user_id", flat=True)) == sorted([staff.pk, other_staff.pk])
    note = notes.first()
    assert note.priority == "high"
    assert note.title == f"Payout job #{job.pk} is still queued after 60 minutes"
    assert note.data["rule"] == "job_too_long"
    assert note.data["job_id"] == job.pk
    # And a live event goes to the staff channel after commit
    events = [c for c in callbacks if getattr(c, "func", None) == staff_event_publish_task.delay]
    assert {e.args[0] for e in events} == {"ops.alert"}
    assert f"payout_job:{job.pk}" in {e.args[1]["subject"] for e in events}
    # And a second check within the hour sends nothing
    assert again == []
    assert alerts_counted()[("job_too_long",)] == 1

    # When the condition still holds an hour later, it is sent again
    with time_machine.travel(start + timedelta(seconds=3601 + 3600), tick=False):
        later = ops_alerts_check()
    assert rules(later, "job_too_long") == {("job_too_long", f"payout_job:{job.pk}")}
    assert notes.count() == 4
    assert alerts_counted()[("job_too_long",)] == 2


def test_a_paused_job_is_staffs_choice_not_an_alert(staff):
    job = queued_job(staff, seed=2)
    PayoutJob.objects.filter(pk=job.pk).update(status=PayoutJob.Status.PAUSED)
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
        assert not [a for a in alerts_evaluate() if a.rule == "job_too_long"]


def test_a_job_that_finished_with_failures(fake_stripe, staff, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    # Given a Stripe job whose first winner has no connected account
    challenge = stripe_challenge_seed(fake_stripe, stakers=6, seed=3, unconnected=1)
    job = challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=staff, rail="stripe"
    )
    payout_job_expand(job_id=job.pk)
    payout_batch_stripe(job_id=job.pk, budget=5)
    job.refresh_from_db()
    assert (job.status, job.failed_count) == (PayoutJob.Status.COMPLETED_WITH_FAILURES, 1)

    # When the alerts are checked
    sent = ops_alerts_check()

    # Then staff hear about it once
    assert rules(sent) == {("job_failures", f"payout_job:{job.pk}")}
    note = Notification.objects.get(kind=Notification.Kind.PLATFORM_ALERT)
    assert note.title == f"Payout job #{job.pk} finished with 1 failed entries"
    # And an hour later it is old news, not a reminder
    with time_machine.travel(timezone.now() + timedelta(seconds=3601), tick=False):
        assert not [a for a in ops_alerts_check() if a.rule == "job_failures"]


def test_a_running_job_slower_than_the_minimum_rate(staff, settings):
    settings.ALERT_MIN_PAYOUTS_PER_S = 10
    # Given a running ledger job that paid one batch of 3 and then stalled
    challenge = challenge_seed(stakers=12, yes_share=0.5, seed=4)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    payout_job_expand(job_id=job.pk)
    assert payout_batch_ledger(job_id=job.pk).claimed == 3
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.RUNNING

    # When it is checked in its first minute, it is too early to say
    assert not [a for a in alerts_evaluate() if a.rule == "job_slow"]
    # And two minutes in (3 payouts in 120 s), it is slow
    with time_machine.travel(job.started_at + timedelta(seconds=120), tick=False):
        sent = ops_alerts_check()
    assert rules(sent) == {("job_slow", f"payout_job:{job.pk}")}
    assert (
        Notification.objects.filter(kind=Notification.Kind.PLATFORM_ALERT).first().data["rate"]
        == 0.03
    )


def test_a_queue_with_messages_and_no_worker_for_two_minutes():
    # Given a message waiting on the payouts queue, which no worker consumes
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        current_app.send_task("payouts.tasks.payout_watchdog_task", queue="payouts")

    # When it waited one minute, nothing yet
    with time_machine.travel(start + timedelta(seconds=60), tick=False):
        assert not [a for a in alerts_evaluate() if a.rule == "queue_unserved"]
    # When it waited two minutes, staff are told
    with time_machine.travel(start + timedelta(seconds=121), tick=False):
        sent = ops_alerts_check()
    assert rules(sent) == {("queue_unserved", "queue:payouts")}
    note = Notification.objects.get(kind=Notification.Kind.PLATFORM_ALERT)
    assert note.title == "Queue payouts has 1 messages and no worker"


def test_a_queue_with_a_live_worker_is_served(redis_client):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        current_app.send_task("payouts.tasks.payout_watchdog_task", queue="payouts")
    with time_machine.travel(start + timedelta(seconds=121), tick=False):
        # A worker's heartbeat (what core.queues writes every 10 s) from just now
        redis_client.zadd(
            "workers:queue:payouts", {"payouts@host": (start + timedelta(seconds=115)).timestamp()}
        )
        assert not [a for a in alerts_evaluate() if a.rule == "queue_unserved"]


def test_a_periodic_task_late_by_three_intervals():
    # Given the watchdog (every minute) last ran 361 seconds ago: three intervals plus the
    # three minutes beat may take to write last_run_at down
    watchdog = PeriodicTask.objects.get(task="payouts.tasks.payout_watchdog_task")
    PeriodicTask.objects.filter(pk=watchdog.pk).update(
        last_run_at=timezone.now() - timedelta(seconds=361)
    )
    sent = ops_alerts_check()
    assert rules(sent) == {("periodic_task_late", f"periodic_task:{watchdog.pk}")}
    # While 355 seconds may still be beat's write lag
    PeriodicTask.objects.filter(pk=watchdog.pk).update(
        last_run_at=timezone.now() - timedelta(seconds=355)
    )
    assert not [a for a in alerts_evaluate() if a.rule == "periodic_task_late"]


def test_dead_letters_piling_up(settings):
    settings.ALERT_DEAD_LETTERS_OPEN = 10

    def letters(count: int, start: int) -> None:
        for n in range(start, start + count):
            dead_letter_record(
                task_id=f"dl-{n}",
                task_name="tests.always_transient",
                args=[],
                kwargs={},
                queue="default",
                error="TransientError",
                traceback="",
                attempts=5,
            )

    letters(9, 0)
    assert not [a for a in alerts_evaluate() if a.rule == "dead_letters_piling"]
    letters(1, 9)
    sent = ops_alerts_check()
    assert rules(sent) == {("dead_letters_piling", "dead_letters")}
    note = Notification.objects.get(kind=Notification.Kind.PLATFORM_ALERT)
    assert note.body.endswith("tests.always_transient (10).")


def test_alerts_go_to_sentry_when_it_is_configured(staff):
    fake = FakeSentry().start()
    sentry_init(dsn=fake.dsn, environment="test", release="stakehold@test", traces_sample_rate=0)
    try:
        job = queued_job(staff, seed=5)
        with time_machine.travel(timezone.now() + timedelta(hours=2), tick=False):
            alerts = [a for a in alerts_evaluate() if a.rule == "job_too_long"]
            assert alert_send(alert=alerts[0])
        sentry_sdk.flush(timeout=5)
        event = fake.wait_for("event", lambda e: e.get("level") == "warning", timeout=10)
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: the rest of the suite reports nowhere
        fake.stop()
    assert event["message"] == f"Payout job #{job.pk} is still queued after 120 minutes"
    assert event["fingerprint"] == ["ops-alert", "job_too_long", f"payout_job:{job.pk}"]
    assert event["tags"]["alert_rule"] == "job_too_long"
    assert event["tags"]["job_id"] == str(job.pk)
    assert event["environment"] == "test"
