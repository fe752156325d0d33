"""The payouts audit catches what it claims: each violation planted the way a bug would leave
it -- a second payment, a wrong amount, a wrong wallet or destination, a missing transfer --
is reported, on the ledger side and on Stripe's; and the hourly money check alerts staff."""

import pytest
import stripe
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from ledger.models import Account, Transfer
from ledger.services import transfer_post
from notifications.models import Notification
from payouts.models import ConnectedAccount, PayoutEntry, PayoutJob
from payouts.services.audit import (
    payout_jobs_audit,
    platform_audit_run,
    stripe_transfers_audit,
)
from payouts.services.jobs import challenge_resolve, payout_job_cancel
from payouts.services.stripe_client import transfer_create
from payouts.services.stripe_rail import ClaimedEntry, payout_batch_stripe, stripe_entry_record_paid
from proof.seeding import challenge_seed
from tests.payouts.helpers import expand_inline, run_job_inline, stripe_challenge_seed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_batches(settings):
    settings.PAYOUT_BATCH_SIZE = 3
    settings.PAYOUT_PARALLELISM = 1
    settings.PLATFORM_FEE_BPS = 500


@pytest.fixture
def fake(fake_stripe, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    settings.STRIPE_BATCH_SECONDS = 3.0
    return fake_stripe


def ledger_job(staff, *, stakers: int = 12, seed: int = 21) -> PayoutJob:
    challenge = challenge_seed(stakers=stakers, yes_share=0.5, seed=seed)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    return job


def stripe_job(fake, staff, *, stakers: int = 10, unconnected: int = 0) -> PayoutJob:
    challenge = stripe_challenge_seed(fake, stakers=stakers, seed=22, unconnected=unconnected)
    job = challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=staff, rail="stripe"
    )
    expand_inline(job.pk)
    return job


def wallet_of(user_id: int) -> int:
    return Account.objects.get(kind=Account.Kind.USER_WALLET, user_id=user_id).pk


def escrow_of(job: PayoutJob) -> int:
    return job.challenge.escrow_id


def assert_reported(violations: list[str], *phrases: str) -> None:
    for phrase in phrases:
        assert any(phrase in v for v in violations), (phrase, violations)


def test_settled_jobs_on_both_rails_pass_the_audit(staff, fake):
    # Given a ledger job paid in full and a stripe job paid in full at the fake
    paid_in_ledger = ledger_job(staff)
    run_job_inline(paid_in_ledger.pk)
    paid_at_stripe = stripe_job(fake, staff)
    payout_batch_stripe(job_id=paid_at_stripe.pk)
    # When both are audited, Then nothing is reported, on either side
    jobs = [paid_in_ledger.pk, paid_at_stripe.pk]
    report = payout_jobs_audit(job_ids=jobs)
    assert report.ok, report.violations
    assert (report.jobs, report.entries) == (2, 6 + 5)
    stripe_report = stripe_transfers_audit(transfers=fake.transfers(), job_ids=jobs)
    assert stripe_report.ok, stripe_report.violations
    assert stripe_report.entries == 5


def test_a_job_half_way_through_passes_the_audit(staff):
    job = ledger_job(staff)
    run_job_inline(job.pk, max_batches=1)
    job.refresh_from_db()
    assert 0 < job.completed_count < job.total_entries
    report = payout_jobs_audit(job_ids=[job.pk])
    assert report.ok, report.violations


def _second_payment(job: PayoutJob, entry: PayoutEntry) -> None:
    # A paid entry paid again under another key: the unique key cannot stop that.
    transfer_post(
        debit_account_id=escrow_of(job),
        credit_account_id=wallet_of(entry.user_id),
        amount=entry.amount,
        kind=Transfer.Kind.PAYOUT,
        idempotency_key=f"payout-again:{entry.pk}",
    )


def _paid_with(job: PayoutJob, entry: PayoutEntry, *, amount: int, wallet: int | None) -> None:
    """Mark an entry paid as a buggy batch would: with this transfer, or none at all."""
    if wallet is not None:
        transfer_post(
            debit_account_id=escrow_of(job),
            credit_account_id=wallet,
            amount=amount,
            kind=Transfer.Kind.PAYOUT,
            idempotency_key=f"payout:{entry.pk}",
        )
    PayoutEntry.objects.filter(pk=entry.pk).update(status=PayoutEntry.Status.COMPLETED)


@pytest.mark.parametrize(
    ("plant", "phrases"),
    [
        (
            "second_transfer",
            ["left the escrow under keys of no entry of this job", "escrow holds"],
        ),
        ("wrong_amount", ["have a ledger transfer of another amount than theirs"]),
        ("wrong_wallet", ["credits another account than the payee"]),
        ("missing_transfer", ["are paid but have no ledger transfer"]),
        ("unpaid_with_transfer", ["are not paid but have a ledger transfer"]),
    ],
)
def test_each_planted_ledger_violation_is_reported(staff, plant, phrases):
    # Given a ledger job that paid its first batch and still holds the rest in escrow
    job = ledger_job(staff)
    run_job_inline(job.pk, max_batches=1)
    paid = PayoutEntry.objects.filter(job=job, status="completed").first()
    pending = PayoutEntry.objects.filter(job=job, status="pending").order_by("id")
    first, other = pending[0], pending[1]
    assert payout_jobs_audit(job_ids=[job.pk]).ok
    # When a violation is planted
    if plant == "second_transfer":
        _second_payment(job, paid)
    elif plant == "wrong_amount":
        _paid_with(job, first, amount=first.amount - 1, wallet=wallet_of(first.user_id))
    elif plant == "wrong_wallet":
        _paid_with(job, first, amount=first.amount, wallet=wallet_of(other.user_id))
    elif plant == "missing_transfer":
        _paid_with(job, first, amount=first.amount, wallet=None)
    else:
        transfer_post(
            debit_account_id=escrow_of(job),
            credit_account_id=wallet_of(first.user_id),
            amount=first.amount,
            kind=Transfer.Kind.PAYOUT,
            idempotency_key=f"payout:{first.pk}",
        )
    # Then the audit reports it
    report = payout_jobs_audit(job_ids=[job.pk])
    assert_reported(report.violations, *phrases)


def test_job_counters_and_settlement_totals_are_checked(staff):
    job = ledger_job(staff)
    run_job_inline(job.pk)
    PayoutJob.objects.filter(pk=job.pk).update(
        completed_count=F("completed_count") - 1, total_amount=F("total_amount") + 1
    )
    report = payout_jobs_audit(job_ids=[job.pk])
    assert_reported(
        report.violations,
        "completed_count is",
        "entries add up to",
        "total",
    )


def _stripe_create(entry: PayoutEntry, *, key: str, amount: int | None = None) -> str:
    """A transfer made at Stripe for an entry outside the rail, under its own key."""
    stripe.api_base = settings.STRIPE_API_BASE
    transfer = stripe.Transfer.create(
        api_key="sk_test_fake",
        idempotency_key=key,
        amount=amount or entry.amount,
        currency="usd",
        destination=ConnectedAccount.objects.get(user_id=entry.user_id).stripe_account_id,
        transfer_group=f"job-{entry.job_id}",
        metadata={"job_id": str(entry.job_id), "entry_id": str(entry.pk)},
    )
    return transfer.id


def test_a_second_stripe_transfer_for_an_entry_is_reported_under_any_key(staff, fake):
    # Given a stripe job paid in full
    job = stripe_job(fake, staff)
    payout_batch_stripe(job_id=job.pk)
    first, second = PayoutEntry.objects.filter(job=job).order_by("id")[:2]
    # When one entry is paid again under another key, and another under its own key after
    # Stripe forgot the key (24 hours later)
    _stripe_create(first, key=f"again:{first.pk}")
    fake.forget_keys()
    account = ConnectedAccount.objects.get(user_id=second.user_id).stripe_account_id
    transfer_create(
        entry_id=second.pk,
        job_id=job.pk,
        amount=second.amount,
        currency="usd",
        destination=account,
    )
    # Then the fake counts two transfers under the second entry's key, and the audit reports
    # both entries
    assert fake.stats()["created_per_key"][f"payout:{second.pk}"] == 2
    report = stripe_transfers_audit(transfers=fake.transfers(), job_ids=[job.pk])
    assert_reported(report.violations, "2 entries have several Stripe transfers")
    assert f"{first.pk}: [" in str(report.violations)
    assert f"{second.pk}: [" in str(report.violations)


def test_a_wrong_amount_or_destination_at_stripe_is_reported(staff, fake):
    # Given a stripe job whose rail sends one entry's amount short by one and another entry
    # to a stranger's account (a bug in what the rail reads), then the bug is gone
    job = stripe_job(fake, staff)
    short, misrouted = PayoutEntry.objects.filter(job=job, amount__gt=F("stake_amount"))[:2]
    PayoutEntry.objects.filter(pk=short.pk).update(amount=F("amount") - 1)
    fake.accounts_put([{"id": "acct_stranger", "payouts_enabled": True}])
    right_account = ConnectedAccount.objects.get(user_id=misrouted.user_id).stripe_account_id
    ConnectedAccount.objects.filter(user_id=misrouted.user_id).update(
        stripe_account_id="acct_stranger"
    )
    payout_batch_stripe(job_id=job.pk)
    PayoutEntry.objects.filter(pk=short.pk).update(amount=F("amount") + 1)
    ConnectedAccount.objects.filter(user_id=misrouted.user_id).update(
        stripe_account_id=right_account
    )
    # Then both sides report the short entry, and Stripe's side the misrouted one
    stripe_report = stripe_transfers_audit(transfers=fake.transfers(), job_ids=[job.pk])
    assert_reported(
        stripe_report.violations,
        f"1 entries have a Stripe transfer of another amount than theirs, e.g. ['{short.pk}:",
        "1 entries have a Stripe transfer to another account than their user's",
        f"{misrouted.pk}: {right_account} vs ['acct_stranger']",
    )
    assert_reported(
        payout_jobs_audit(job_ids=[job.pk]).violations,
        "have a ledger transfer of another amount than theirs",
    )


def test_a_paid_entry_stripe_never_saw_is_reported(staff, fake):
    # Given a stripe job whose unconnected winner failed, then got recorded as paid with a
    # transfer id Stripe does not have
    job = stripe_job(fake, staff, unconnected=1)
    payout_batch_stripe(job_id=job.pk)
    failed = PayoutEntry.objects.get(job=job, status="failed")
    PayoutEntry.objects.filter(pk=failed.pk).update(
        status=PayoutEntry.Status.RETRYABLE, next_attempt_at=timezone.now()
    )
    claimed = ClaimedEntry(failed.pk, failed.user_id, failed.amount, failed.attempt_count, False)
    stripe_entry_record_paid(job_id=job.pk, entry=claimed, transfer_id="tr_nowhere")
    # Then Stripe's side reports it
    report = stripe_transfers_audit(transfers=fake.transfers(), job_ids=[job.pk])
    assert_reported(
        report.violations,
        f"1 entries are paid but Stripe has no transfer for them, e.g. ['{failed.pk}']",
    )


def test_an_entry_cancelled_while_stripe_holds_its_transfer_is_reported(staff, fake):
    # Given a stripe job one of whose entries reached Stripe but whose answer was lost (the
    # transfer exists, the entry does not know), then the job is cancelled
    job = stripe_job(fake, staff)
    entry = PayoutEntry.objects.filter(job=job).first()
    _stripe_create(entry, key=f"payout:{entry.pk}")
    payout_job_cancel(job_id=job.pk, actor=staff)
    entry.refresh_from_db()
    # Then, if the entry ended cancelled, the audit sees a winner paid at Stripe whose money
    # the ledger still holds in escrow
    report = stripe_transfers_audit(transfers=fake.transfers(), job_ids=[job.pk])
    if entry.status == PayoutEntry.Status.CANCELLED:
        assert_reported(report.violations, "entries are cancelled but Stripe has a transfer")
    else:
        # Cancelling reconciled with Stripe first: the entry is paid, and nothing is amiss
        assert entry.status == PayoutEntry.Status.COMPLETED
        assert report.ok, report.violations


def test_a_stripe_transfer_naming_no_audited_entry_is_reported(staff, fake):
    job = stripe_job(fake, staff)
    payout_batch_stripe(job_id=job.pk)
    stray = {"id": "tr_stray", "amount": 5, "destination": "acct_x", "metadata": {}}
    report = stripe_transfers_audit(transfers=[*fake.transfers(), stray], job_ids=[job.pk])
    assert_reported(report.violations, "1 Stripe transfers name no entry of the audited jobs")


def test_the_money_check_alerts_every_staff_member_once_per_failing_run(staff, make_user):
    # Given a ledger job with a second payment planted, and two staff members
    other_staff = make_user("auditor", staff=True)
    job = ledger_job(staff)
    run_job_inline(job.pk, max_batches=1)
    assert platform_audit_run().ok
    assert not Notification.objects.filter(kind="platform_alert").exists()
    _second_payment(job, PayoutEntry.objects.filter(job=job, status="completed").first())
    # When the hourly check runs
    audit = platform_audit_run()
    # Then it fails and each staff member has one high-priority alert naming the job
    assert not audit.ok
    alerts = Notification.objects.filter(kind="platform_alert")
    assert sorted(alerts.values_list("user_id", flat=True)) == sorted([staff.pk, other_staff.pk])
    assert all(a.priority == "high" and f"job {job.pk}" in a.body for a in alerts)


def test_beat_runs_the_money_check_hourly_on_the_scheduler_queue():
    from django_celery_beat.models import PeriodicTask

    from config.celery import app

    task = PeriodicTask.objects.select_related("interval").get(
        task="payouts.tasks.platform_audit_task"
    )
    assert task.enabled
    assert (task.interval.every, task.interval.period) == (1, "hours")
    app.loader.import_default_modules()
    assert "payouts.tasks.platform_audit_task" in app.tasks
    assert app.amqp.router.route({}, "payouts.tasks.platform_audit_task")["queue"].name == (
        "scheduler"
    )
