"""Cancelling a Stripe-rail job never strands a paid entry: entries that may have reached
Stripe are looked up there before they are cancelled, and the fake's records and the ledger's
agree afterwards."""

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from ledger.models import Account, Transfer
from payouts.models import PayoutEntry, PayoutJob
from payouts.selectors import payout_job_progress
from payouts.services.engine import RECONCILE_TASK
from payouts.services.jobs import payout_job_cancel
from payouts.services.stripe_client import transfer_create
from payouts.services.stripe_rail import (
    payout_batch_stripe,
    stripe_entries_claim,
    stripe_entries_reconcile,
)
from tests.payouts.test_stripe_rail import balance, stripe_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(fake_stripe, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    return fake_stripe


def assert_fake_and_ledger_agree(fake, job: PayoutJob) -> None:
    """Per entry: paid here exactly when Stripe holds one transfer for it (same amount, same
    id) and the ledger one ``payout:<id>`` transfer of that amount; cancelled entries have
    neither; the escrow holds exactly what was not paid, fee included."""
    at_stripe: dict[int, list[dict]] = {}
    for transfer in fake.transfers():
        at_stripe.setdefault(int(transfer["metadata"]["entry_id"]), []).append(transfer)
    for entry in PayoutEntry.objects.filter(job=job):
        ledger = list(Transfer.objects.filter(idempotency_key=f"payout:{entry.pk}"))
        if entry.status == PayoutEntry.Status.COMPLETED:
            (transfer,) = at_stripe[entry.pk]
            assert (transfer["id"], transfer["amount"]) == (entry.stripe_transfer_id, entry.amount)
            assert [t.amount for t in ledger] == [entry.amount]
        else:
            assert entry.status == PayoutEntry.Status.CANCELLED, entry
            assert entry.pk not in at_stripe
            assert ledger == []
    job.refresh_from_db()
    paid = job.entries.filter(status="completed").aggregate(total=Sum("amount"))["total"] or 0
    assert job.paid_amount == paid
    assert balance(job.challenge.escrow_id) == job.total_amount - paid + job.fee_amount
    assert job.completed_count + job.cancelled_count == job.total_entries


def test_a_lost_answer_then_a_cancel_records_the_payment_instead_of_cancelling_it(
    fake, staff, django_capture_on_commit_callbacks
):
    # Given a Stripe job whose first attempts all failed: half of them after Stripe made the
    # transfer (the answer was lost), half before (connection reset); its list answers
    fake.configure(seed=4, faults={"lost": 0.5, "reset": 0.5}, faults_on_reads=False)
    job = stripe_job(fake, staff, stakers=16)
    payout_batch_stripe(job_id=job.pk, budget=1)
    assert set(job.entries.values_list("status", flat=True)) == {"retryable"}
    lost = {int(t["metadata"]["entry_id"]) for t in fake.transfers()}
    assert 0 < len(lost) < job.total_entries
    # When staff cancel the job
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        payout_job_cancel(job_id=job.pk, actor=staff)
    # Then nothing is cancelled blind: every entry is uncertain, and Stripe is to be asked
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.CANCELLED
    assert payout_job_progress(job=job)["uncertain"] == job.total_entries
    assert job.cancelled_count == 0
    assert any(getattr(c, "args", None) == (RECONCILE_TASK,) for c in callbacks)
    # When the reconciliation runs (the task sent after the cancel)
    result = stripe_entries_reconcile(job_id=job.pk)
    # Then the entries Stripe paid are recorded as paid, only the others are cancelled
    assert (result.paid, result.cancelled, result.uncertain) == (
        len(lost),
        job.total_entries - len(lost),
        0,
    )
    assert set(job.entries.filter(status="completed").values_list("id", flat=True)) == lost
    assert_fake_and_ledger_agree(fake, job)
    assert payout_job_progress(job=job)["uncertain"] == 0
    # And each paid entry's history ends with the lookup that found its transfer
    for entry in job.entries.filter(status="completed"):
        assert [a.outcome for a in entry.attempts.order_by("id")] == ["transient", "reconciled"]
    # And running it again changes nothing
    assert stripe_entries_reconcile(job_id=job.pk) == type(result)(0, 0, 0)
    assert Transfer.objects.filter(kind=Transfer.Kind.STRIPE_PAYOUT).count() == len(lost)


def test_pending_entries_are_cancelled_at_once_and_nothing_is_asked(fake, staff):
    # Given a Stripe job nobody worked on yet
    job = stripe_job(fake, staff, stakers=6)
    # When it is cancelled
    payout_job_cancel(job_id=job.pk, actor=staff)
    # Then its entries are cancelled straight away, Stripe untouched
    job.refresh_from_db()
    assert job.cancelled_count == job.total_entries
    assert payout_job_progress(job=job)["uncertain"] == 0
    assert fake.stats()["requests"] == 0
    assert_fake_and_ledger_agree(fake, job)


def test_a_processing_entry_stays_uncertain_until_its_lease_ends_then_stripe_decides(fake, staff):
    # Given a worker that claimed an entry, got its transfer from Stripe, and died
    job = stripe_job(fake, staff, stakers=2)
    (claimed,), _, _ = stripe_entries_claim(job_id=job.pk)
    transfer_create(
        entry_id=claimed.id,
        job_id=job.pk,
        amount=claimed.amount,
        currency="usd",
        destination=f"acct_seed{claimed.user_id}",
    )
    # When staff cancel while its lease still runs
    payout_job_cancel(job_id=job.pk, actor=staff)
    # Then it is left to its worker: uncertain, neither paid nor cancelled
    assert stripe_entries_reconcile(job_id=job.pk).paid == 0
    job.refresh_from_db()
    assert payout_job_progress(job=job)["uncertain"] == 1
    assert job.entries.get().status == PayoutEntry.Status.PROCESSING
    # When the lease runs out and the reconciliation runs again (the watchdog sends it)
    PayoutEntry.objects.filter(pk=claimed.id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    result = stripe_entries_reconcile(job_id=job.pk)
    # Then the transfer Stripe made is recorded: paid, not cancelled
    assert (result.paid, result.cancelled) == (1, 0)
    assert_fake_and_ledger_agree(fake, job)


def test_when_stripe_cannot_be_asked_nothing_is_cancelled(fake, staff):
    # Given a cancelled job with an entry whose answer was lost, and Stripe down
    fake.configure(faults={"lost": 1.0})
    job = stripe_job(fake, staff, stakers=2)
    payout_batch_stripe(job_id=job.pk, budget=1)
    payout_job_cancel(job_id=job.pk, actor=staff)
    fake.configure(faults={"server_error": 1.0})
    # When the reconciliation runs
    result = stripe_entries_reconcile(job_id=job.pk)
    # Then the entry stays uncertain (retryable), and is settled once Stripe answers
    assert (result.paid, result.cancelled, result.uncertain) == (0, 0, 1)
    assert job.entries.get().status == PayoutEntry.Status.RETRYABLE
    fake.configure(faults={})
    assert stripe_entries_reconcile(job_id=job.pk).paid == 1
    assert_fake_and_ledger_agree(fake, job)
    assert Account.objects.get(pk=job.challenge.escrow_id).balance == job.fee_amount
