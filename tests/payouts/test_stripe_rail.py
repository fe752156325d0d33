"""The Stripe rail's services in this process, against the fake Stripe server: claims, outcomes,
leases, reconciliation, connected accounts and bad input. Real worker processes are in
``test_stripe_workers.py``."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from challenges.models import Challenge
from core.models import DeadLetter
from ledger.models import Account, Transfer
from ledger.services import system_account_id
from payouts.models import ConnectedAccount, PayoutEntry, PayoutJob
from payouts.services.connected_accounts import connected_account_link
from payouts.services.engine import payout_job_expand
from payouts.services.jobs import challenge_resolve, payout_job_retry_failed
from payouts.services.stripe_client import transfer_create
from payouts.services.stripe_rail import payout_batch_stripe, stripe_entries_claim
from proof.seeding import challenge_seed
from tests.conftest import run_together, wait_for
from tests.payouts.helpers import stripe_challenge_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(fake_stripe, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    settings.STRIPE_RETRY_BACKOFF_BASE = 5.0
    # In this process a batch must not sit waiting for retries (5 s away) to fall due.
    settings.STRIPE_BATCH_SECONDS = 3.0
    return fake_stripe


def stripe_job(fake, staff, *, stakers=10, unconnected=0) -> PayoutJob:
    """A resolved, expanded stripe-rail job whose first ``unconnected`` winners have no account."""
    challenge = stripe_challenge_seed(fake, stakers=stakers, seed=3, unconnected=unconnected)
    job = challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=staff, rail="stripe"
    )
    payout_job_expand(job_id=job.pk)
    job.refresh_from_db()
    return job


def balance(account_id: int) -> int:
    return Account.objects.get(pk=account_id).balance


def test_a_stripe_job_pays_every_winner_once_into_stripe_clearing(fake, staff):
    # Given a stripe-rail job with 5 winners, all connected
    job = stripe_job(fake, staff)
    entries = list(job.entries.all())
    assert len(entries) == 5
    # When one batch runs
    payout_batch_stripe(job_id=job.pk)
    # Then every entry is completed with its own transfer, one per idempotency key
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    assert job.completed_count == 5
    assert job.paid_amount == job.total_amount
    stats = fake.stats()
    assert stats["created_per_key"] == {f"payout:{e.pk}": 1 for e in entries}
    by_entry = {int(t["metadata"]["entry_id"]): t for t in fake.transfers()}
    for entry in PayoutEntry.objects.filter(job=job):
        assert entry.status == PayoutEntry.Status.COMPLETED
        assert entry.stripe_transfer_id == by_entry[entry.pk]["id"]
        assert by_entry[entry.pk]["amount"] == entry.amount
        assert by_entry[entry.pk]["transfer_group"] == f"job-{job.pk}"
        assert by_entry[entry.pk]["destination"] == f"acct_seed{entry.user_id}"
        ledger = Transfer.objects.get(idempotency_key=f"payout:{entry.pk}")
        assert ledger.kind == Transfer.Kind.STRIPE_PAYOUT
        assert ledger.amount == entry.amount
    # And the money left escrow (fee collected) for stripe_clearing
    assert balance(job.challenge.escrow_id) == 0
    assert balance(system_account_id(Account.Kind.STRIPE_CLEARING)) == job.paid_amount
    # And running the batch again sends nothing more
    payout_batch_stripe(job_id=job.pk)
    assert fake.stats()["requests"] == stats["requests"]


def test_missing_or_disabled_account_fails_without_a_call_then_retry_failed_pays(
    fake, staff, settings
):
    # Given a job whose first winner has no account and whose second has payouts disabled
    job = stripe_job(fake, staff, unconnected=1)
    first, second, *others = list(job.entries.order_by("id"))
    ConnectedAccount.objects.filter(user_id=second.user_id).update(payouts_enabled=False)
    # When the batch runs
    payout_batch_stripe(job_id=job.pk)
    # Then both fail as not connected, and Stripe never heard of them
    for entry in (first, second):
        entry.refresh_from_db()
        assert entry.status == PayoutEntry.Status.FAILED
        assert entry.failure_reason == "stripe_account_not_connected"
        assert entry.stripe_transfer_id == ""
        assert DeadLetter.objects.filter(subject=f"payout_entry:{entry.pk}").count() == 1
    keys = set(fake.stats()["created_per_key"])
    assert keys == {f"payout:{e.pk}" for e in others}
    assert fake.stats()["requests"] == len(others)
    # And the job completed with failures, their money still in escrow
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED_WITH_FAILURES
    assert job.failed_count == 2
    assert balance(job.challenge.escrow_id) == first.amount + second.amount
    # When both connect, and staff retry the failed entries
    connected_account_link(
        user_id=first.user_id, stripe_account_id="acct_late", payouts_enabled=True, actor=staff
    )
    ConnectedAccount.objects.filter(user_id=second.user_id).update(payouts_enabled=True)
    fake.accounts_put(
        [
            {"id": "acct_late", "payouts_enabled": True},
            {"id": f"acct_seed{second.user_id}", "payouts_enabled": True},
        ]
    )
    payout_job_retry_failed(job_id=job.pk, actor=staff)
    payout_batch_stripe(job_id=job.pk)
    # Then they are paid, once each, and the escrow is empty
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    assert (job.completed_count, job.failed_count) == (5, 0)
    assert balance(job.challenge.escrow_id) == 0
    assert fake.stats()["created_per_key"][f"payout:{first.pk}"] == 1
    assert fake.transfers()[-2]["destination"] in {"acct_late", f"acct_seed{second.user_id}"}


def test_transient_errors_back_off_then_fail_with_a_dead_letter_when_attempts_run_out(
    fake, staff, settings
):
    # Given Stripe answering every transfer request with a 500 (its list answers), and three
    # attempts allowed
    settings.STRIPE_MAX_ATTEMPTS = 3
    fake.configure(faults={"server_error": 1.0}, faults_on_reads=False)
    job = stripe_job(fake, staff, stakers=2)
    (entry,) = job.entries.all()
    # When the first attempt fails
    payout_batch_stripe(job_id=job.pk)
    entry.refresh_from_db()
    # Then the entry is retryable about 5 s later (base delay, up to 25% jitter)
    assert entry.status == PayoutEntry.Status.RETRYABLE
    assert entry.attempt_count == 1
    assert entry.failure_reason == "stripe_unavailable"
    delay = (entry.next_attempt_at - timezone.now()).total_seconds()
    assert 4.0 < delay <= 6.25
    # When its retries fall due (time passes) and fail as well
    second_delay = None
    for _ in range(2):
        PayoutEntry.objects.filter(pk=entry.pk).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        payout_batch_stripe(job_id=job.pk, budget=10)
        entry.refresh_from_db()
        if entry.status == PayoutEntry.Status.RETRYABLE:
            second_delay = (entry.next_attempt_at - timezone.now()).total_seconds()
    # Then the delay doubled, and the third failure is final, with a dead letter
    assert 9.0 < second_delay <= 12.5
    assert entry.status == PayoutEntry.Status.FAILED
    assert entry.attempt_count == 3
    assert entry.failure_reason == "stripe_attempts_exhausted"
    letter = DeadLetter.objects.get(subject=f"payout_entry:{entry.pk}")
    assert letter.attempts == 3
    assert "500" in letter.error
    # And each call is on record: three transient 500s, each with Stripe's request id
    attempts = list(entry.attempts.order_by("id"))
    assert [(a.attempt, a.outcome, a.http_status) for a in attempts] == [
        (1, "transient", 500),
        (2, "transient", 500),
        (3, "transient", 500),
    ]
    assert all(a.stripe_request_id.startswith("req_") for a in attempts)
    assert all(a.error_code == "stripe_unavailable" and a.duration_ms >= 0 for a in attempts)
    assert all(a.started_at <= a.finished_at for a in attempts)
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED_WITH_FAILURES
    assert balance(job.challenge.escrow_id) == entry.amount


@pytest.mark.parametrize(
    ("fault", "reads", "status", "outcomes"),
    [
        ("lost", True, "completed", ["transient", "reconciled"]),
        ("reset", False, "failed", ["transient"]),
        # The list cannot be read either: nothing proves Stripe has no transfer, so the entry
        # is not failed (failing it could strand a paid entry); it is tried again later.
        ("reset", True, "retryable", ["transient", "transient"]),
    ],
)
def test_before_the_last_attempt_fails_stripe_is_asked_whether_it_paid(
    fake, staff, settings, fault, reads, status, outcomes
):
    # Given one attempt allowed, and Stripe dropping the connection after (lost) or before
    # (reset) it creates the transfer (and dropping its list requests too, or not)
    settings.STRIPE_MAX_ATTEMPTS = 1
    fake.configure(faults={fault: 1.0}, faults_on_reads=reads)
    job = stripe_job(fake, staff, stakers=2)
    # When the only attempt fails
    payout_batch_stripe(job_id=job.pk, budget=1)
    # Then the entry is paid if Stripe made the transfer, failed only if Stripe's list shows
    # it did not, and otherwise still open
    entry = job.entries.get()
    assert entry.status == status
    assert fake.stats()["transfers_created"] == (1 if fault == "lost" else 0)
    if fault == "lost":
        assert entry.stripe_transfer_id == fake.transfers()[0]["id"]
    elif status == "failed":
        assert entry.failure_reason == "stripe_attempts_exhausted"
    # And both calls (the create, then the lookup) are in the entry's history
    assert [a.outcome for a in entry.attempts.order_by("id")] == outcomes
    if fault == "lost":
        assert entry.attempts.get(outcome="reconciled").transfer_id == entry.stripe_transfer_id


def test_an_expired_lease_is_reclaimed_and_the_retry_gets_the_same_transfer(fake, staff):
    # Given a worker that claimed an entry and got its transfer from Stripe, then died
    job = stripe_job(fake, staff, stakers=2)
    (claimed,), _, _ = stripe_entries_claim(job_id=job.pk)
    first = transfer_create(
        entry_id=claimed.id,
        job_id=job.pk,
        amount=claimed.amount,
        currency="usd",
        destination=f"acct_seed{claimed.user_id}",
    )
    # When its lease expires and another batch runs
    assert payout_batch_stripe(job_id=job.pk, budget=0.5) == 0  # leased: not touched
    PayoutEntry.objects.filter(pk=claimed.id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    payout_batch_stripe(job_id=job.pk)
    # Then the entry is paid with the transfer Stripe made the first time, and only that one
    entry = PayoutEntry.objects.get(pk=claimed.id)
    assert entry.status == PayoutEntry.Status.COMPLETED
    assert entry.attempt_count == 2
    assert entry.stripe_transfer_id == first.transfer_id
    assert fake.stats()["created_per_key"] == {f"payout:{entry.pk}": 1}
    assert fake.stats()["replays"] == 1


def test_a_claim_takes_due_retries_wherever_they_are_then_pending_entries_after_its_position(
    fake, staff
):
    # Given five entries, the first a retry that fell due
    job = stripe_job(fake, staff)
    e1, e2, e3, e4, e5 = job.entries.order_by("id")
    PayoutEntry.objects.filter(pk=e1.pk).update(
        status=PayoutEntry.Status.RETRYABLE,
        attempt_count=1,
        failure_reason="stripe_unavailable",
        next_attempt_at=timezone.now() - timedelta(seconds=1),
    )
    # When a batch that has claimed up to the third claims again
    claimed, _, position = stripe_entries_claim(job_id=job.pk, after_id=e3.pk)
    # Then it gets the retry, and the pending entries after its position only
    assert [entry.id for entry in claimed] == [e1.pk, e4.pk, e5.pk]
    assert position == e5.pk
    # And past the last entry it finds nothing; from the start, the entries it passed over
    assert stripe_entries_claim(job_id=job.pk, after_id=position)[0] == []
    again, _, _ = stripe_entries_claim(job_id=job.pk)
    assert [entry.id for entry in again] == [e2.pk, e3.pk]


@pytest.mark.django_db(transaction=True)
def test_a_batch_pays_the_pending_entry_another_claim_held_behind_its_position(
    fake, staff, settings
):
    settings.STRIPE_CLAIM_SIZE = 2
    job = stripe_job(fake, staff)
    first, *rest = job.entries.order_by("id")
    # Given the first entry held by a claim on another connection (a row lock, not committed)
    with transaction.atomic():
        PayoutEntry.objects.select_for_update().filter(pk=first.pk).get()
        # When a batch runs meanwhile, it pays the others and moves its position past them
        batch = threading.Thread(
            target=run_together, args=[lambda: payout_batch_stripe(job_id=job.pk)]
        )
        batch.start()
        wait_for(
            lambda: (
                PayoutEntry.objects.filter(
                    pk__in=[e.pk for e in rest], status=PayoutEntry.Status.COMPLETED
                ).count()
                == len(rest)
            ),
            timeout=10,
        )
        # and the other claim gives the entry up
        transaction.set_rollback(True)
    batch.join(10)
    # Then the batch goes back for the entry behind its position and pays it too
    first.refresh_from_db()
    assert first.status == PayoutEntry.Status.COMPLETED
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    assert fake.stats()["created_per_key"] == {f"payout:{e.pk}": 1 for e in [first, *rest]}


def test_entries_first_tried_a_day_ago_are_looked_up_before_any_create(fake, staff):
    # Given two entries first attempted 24 hours ago; Stripe paid the first back then but has
    # since forgotten its idempotency key, and never paid the second
    job = stripe_job(fake, staff, stakers=4)
    paid, unpaid = job.entries.order_by("id")
    earlier = transfer_create(
        entry_id=paid.pk,
        job_id=job.pk,
        amount=paid.amount,
        currency="usd",
        destination=f"acct_seed{paid.user_id}",
    )
    fake.state.keys.clear()
    job.entries.update(
        status=PayoutEntry.Status.RETRYABLE,
        attempt_count=1,
        first_attempt_at=timezone.now() - timedelta(hours=24),
        next_attempt_at=timezone.now(),
    )
    # When the batch runs
    payout_batch_stripe(job_id=job.pk)
    # Then the first is matched to its old transfer (no second one) and the second is created
    paid.refresh_from_db()
    unpaid.refresh_from_db()
    assert paid.status == unpaid.status == PayoutEntry.Status.COMPLETED
    assert paid.stripe_transfer_id == earlier.transfer_id
    assert fake.stats()["transfers_created"] == 2
    assert fake.stats()["created_per_key"] == {f"payout:{paid.pk}": 1, f"payout:{unpaid.pk}": 1}


def test_a_paused_job_is_not_claimed(fake, staff):
    job = stripe_job(fake, staff, stakers=2)
    PayoutJob.objects.filter(pk=job.pk).update(status=PayoutJob.Status.PAUSED)
    assert payout_batch_stripe(job_id=job.pk) == 0
    assert job.entries.get().status == PayoutEntry.Status.PENDING
    assert fake.stats()["requests"] == 0


def test_released_entries_were_never_sent(fake, staff, settings):
    # Given a lease too short to cover one more request
    settings.STRIPE_LEASE_SECONDS = 1
    settings.STRIPE_TIMEOUT = 2.0
    job = stripe_job(fake, staff, stakers=4)
    # When the batch claims them, it gives them back unsent instead of racing its lease
    payout_batch_stripe(job_id=job.pk, budget=0.3)
    assert fake.stats()["requests"] == 0
    assert not job.entries.exclude(attempt_count=0).exists()
    assert not job.entries.filter(lease_until__gt=F("created_at") + timedelta(days=1)).exists()


@pytest.mark.parametrize(
    ("rail", "api_key", "code"),
    [("bogus", "sk_test_x", "invalid_rail"), ("stripe", "", "stripe_not_configured")],
)
def test_bad_rail_input_is_a_clear_400_and_changes_nothing(
    make_user, staff, client_for, settings, rail, api_key, code
):
    settings.STRIPE_API_KEY = api_key
    challenge = challenge_seed(stakers=2, seed=1)
    response = client_for(staff).post(
        f"/api/admin/challenges/{challenge.pk}/resolve/",
        {"result": "challenger_won", "rail": rail},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == code
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.PENDING_ADMIN
    assert not PayoutJob.objects.filter(challenge=challenge).exists()


def test_linking_an_account_is_audited_and_refuses_bad_ids(make_user, staff):
    from core.errors import Conflict, InvalidInput
    from core.models import AuditEntry

    alice, bob = make_user("alice"), make_user("bob")
    connected_account_link(
        user_id=alice.pk, stripe_account_id="acct_a", payouts_enabled=True, actor=staff
    )
    assert AuditEntry.objects.filter(action="connected_account.link", actor=staff).count() == 1
    with pytest.raises(InvalidInput):
        connected_account_link(
            user_id=bob.pk, stripe_account_id="nope", payouts_enabled=True, actor=staff
        )
    with pytest.raises(Conflict):
        connected_account_link(
            user_id=bob.pk, stripe_account_id="acct_a", payouts_enabled=True, actor=staff
        )


def test_the_watchdog_restarts_a_stripe_job_whose_batches_died(
    fake, staff, django_capture_on_commit_callbacks
):
    from payouts.services.engine import payout_batches_enqueue
    from payouts.services.watchdog import payout_watchdog

    # Given a stripe job with an entry whose worker died mid-call, and no batch for a minute
    job = stripe_job(fake, staff, stakers=2)
    stripe_entries_claim(job_id=job.pk)
    PayoutEntry.objects.filter(job=job).update(lease_until=timezone.now() - timedelta(seconds=1))
    PayoutJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=2))
    # When the watchdog runs
    with django_capture_on_commit_callbacks() as callbacks:
        report = payout_watchdog()
    # Then it sends the job's stripe batches, which re-claim the entry and pay it
    assert job.pk in report.restarted
    sent = [c for c in callbacks if getattr(c, "func", None) is payout_batches_enqueue]
    assert [c.keywords["rail"] for c in sent] == ["stripe"]
    payout_batch_stripe(job_id=job.pk)
    entry = job.entries.get()
    assert (entry.status, entry.attempt_count) == (PayoutEntry.Status.COMPLETED, 2)


def test_replaying_a_failed_entrys_dead_letter_pays_that_entry(fake, staff, settings):
    # Given an entry that failed for good while Stripe dropped every transfer request (its
    # transfer list answered: no transfer)
    settings.STRIPE_MAX_ATTEMPTS = 1
    fake.configure(faults={"reset": 1.0}, faults_on_reads=False)
    job = stripe_job(fake, staff, stakers=2)
    payout_batch_stripe(job_id=job.pk)
    entry = job.entries.get()
    assert entry.status == PayoutEntry.Status.FAILED
    letter = DeadLetter.objects.get(subject=f"payout_entry:{entry.pk}")
    # When Stripe is back and the letter's task runs again, as a replay sends it
    fake.configure(faults={})
    from payouts.tasks import payout_entry_retry_task

    assert letter.task_name == payout_entry_retry_task.name
    assert payout_entry_retry_task.run(*letter.args) is True
    payout_batch_stripe(job_id=job.pk)
    # Then that entry is paid once and the job completes; a second replay finds nothing to do
    entry.refresh_from_db()
    assert entry.status == PayoutEntry.Status.COMPLETED
    assert fake.stats()["transfers_created"] == 1
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    assert payout_entry_retry_task.run(*letter.args) is False
