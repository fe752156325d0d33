"""Every refusal of the payout and ledger services leaves money, entries, jobs and challenges
exactly as they were (before/after snapshots), the finalize guard refuses a wrong escrow, and a
reversal pays back no more than was paid, to the right entry only."""

from collections.abc import Callable

import pytest
from django.db import transaction
from django.test import override_settings

from challenges.models import Challenge
from core.errors import DomainError
from core.models import AuditEntry, DeadLetter
from ledger.models import Account, Transfer
from ledger.services import TransferSpec, transfer_post, transfers_post, wallet_deposit
from payouts.models import ConnectedAccount, PayoutEntry, PayoutJob
from payouts.services.audit import payout_jobs_audit
from payouts.services.connected_accounts import connected_account_link
from payouts.services.engine import payout_batch_ledger, payout_job_finalize
from payouts.services.jobs import (
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
)
from payouts.services.stripe_rail import payout_batch_stripe
from payouts.services.stripe_webhooks import stripe_transfer_reversed
from proof.seeding import challenge_seed
from tests.payouts.helpers import expand_inline, run_job_inline, stripe_challenge_seed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_batches(settings):
    settings.PAYOUT_BATCH_SIZE = 2
    settings.PAYOUT_PARALLELISM = 1
    settings.PLATFORM_FEE_BPS = 500
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_BATCH_SECONDS = 3.0


def snapshot() -> tuple:
    """Everything a refusal must leave alone."""
    return (
        tuple(Account.objects.order_by("id").values_list("id", "balance")),
        tuple(Transfer.objects.order_by("id").values_list("id", "amount", "idempotency_key")),
        tuple(
            PayoutEntry.objects.order_by("id").values_list(
                "id", "status", "amount", "attempt_count", "stripe_transfer_id"
            )
        ),
        tuple(
            PayoutJob.objects.order_by("id").values_list(
                "id",
                "status",
                "completed_count",
                "failed_count",
                "cancelled_count",
                "paid_amount",
                "total_amount",
                "fee_amount",
                "finished_at",
            )
        ),
        tuple(Challenge.objects.order_by("id").values_list("id", "status", "result")),
        tuple(ConnectedAccount.objects.order_by("id").values_list("user_id", "stripe_account_id")),
        AuditEntry.objects.count(),
        DeadLetter.objects.count(),
    )


@pytest.fixture
def world(staff, fake_stripe):
    """Challenges and jobs in every state a refusal can meet."""
    running = challenge_seed(stakers=10, seed=31)
    running_job = challenge_resolve(challenge_id=running.pk, result="challenger_won", actor=staff)
    run_job_inline(running_job.pk, max_batches=1)
    done = challenge_seed(stakers=6, seed=32)
    done_job = challenge_resolve(challenge_id=done.pk, result="challenged_won", actor=staff)
    run_job_inline(done_job.pk)
    failing = stripe_challenge_seed(fake_stripe, stakers=4, seed=33, unconnected=1)
    failing_job = challenge_resolve(
        challenge_id=failing.pk, result="challenger_won", actor=staff, rail="stripe"
    )
    expand_inline(failing_job.pk)
    payout_batch_stripe(job_id=failing_job.pk)
    cancelled = challenge_seed(stakers=2, seed=34, status=Challenge.Status.ACTIVE)
    challenge_cancel(challenge_id=cancelled.pk, actor=staff)
    open_ = challenge_seed(stakers=4, seed=35, status=Challenge.Status.ACTIVE)
    awaiting = challenge_seed(stakers=4, seed=36)
    objects = {
        "running": running,
        "running_job": PayoutJob.objects.get(pk=running_job.pk),
        "done": done,
        "done_job": PayoutJob.objects.get(pk=done_job.pk),
        "failing_job": PayoutJob.objects.get(pk=failing_job.pk),
        "cancelled": cancelled,
        "open": open_,
        "awaiting": awaiting,
        "staff": staff,
    }
    assert Challenge.objects.get(pk=running.pk).status == Challenge.Status.RESOLVING
    assert Challenge.objects.get(pk=done.pk).status == Challenge.Status.COMPLETED
    assert objects["running_job"].status == "running"
    assert objects["done_job"].status == "completed"
    assert objects["failing_job"].status == "completed_with_failures"
    return objects


def _wallet(challenge: Challenge) -> int:
    user_id = challenge.stakes.order_by("id").values_list("user_id", flat=True)[0]
    return Account.objects.get(kind="user_wallet", user_id=user_id).pk


REFUSALS: dict[str, tuple[str, Callable[[dict], object]]] = {
    "resolve with an unknown result": (
        "invalid_result",
        lambda w: challenge_resolve(
            challenge_id=w["awaiting"].pk, result="nobody", actor=w["staff"]
        ),
    ),
    "resolve on an unknown rail": (
        "invalid_rail",
        lambda w: challenge_resolve(
            challenge_id=w["awaiting"].pk, result="draw", actor=w["staff"], rail="pigeon"
        ),
    ),
    "resolve on Stripe without Stripe": (
        "stripe_not_configured",
        lambda w: _without_stripe(
            lambda: challenge_resolve(
                challenge_id=w["awaiting"].pk,
                result="challenger_won",
                actor=w["staff"],
                rail="stripe",
            )
        ),
    ),
    "resolve an unknown challenge": (
        "challenge_not_found",
        lambda w: challenge_resolve(challenge_id=10**9, result="draw", actor=w["staff"]),
    ),
    "resolve a challenge being paid": (
        "already_resolved",
        lambda w: challenge_resolve(challenge_id=w["running"].pk, result="draw", actor=w["staff"]),
    ),
    "resolve a completed challenge": (
        "already_resolved",
        lambda w: challenge_resolve(challenge_id=w["done"].pk, result="draw", actor=w["staff"]),
    ),
    "resolve an active challenge": (
        "challenge_not_resolvable",
        lambda w: challenge_resolve(challenge_id=w["open"].pk, result="draw", actor=w["staff"]),
    ),
    "cancel a challenge being paid": (
        "already_resolved",
        lambda w: challenge_cancel(challenge_id=w["running"].pk, actor=w["staff"]),
    ),
    "cancel a completed challenge": (
        "already_resolved",
        lambda w: challenge_cancel(challenge_id=w["done"].pk, actor=w["staff"]),
    ),
    "cancel a cancelled challenge": (
        "challenge_not_cancellable",
        lambda w: challenge_cancel(challenge_id=w["cancelled"].pk, actor=w["staff"]),
    ),
    "pause a completed job": (
        "invalid_job_state",
        lambda w: payout_job_pause(job_id=w["done_job"].pk, actor=w["staff"]),
    ),
    "resume a running job": (
        "invalid_job_state",
        lambda w: payout_job_resume(job_id=w["running_job"].pk, actor=w["staff"]),
    ),
    "cancel a completed job": (
        "invalid_job_state",
        lambda w: payout_job_cancel(job_id=w["done_job"].pk, actor=w["staff"]),
    ),
    "cancel a job that completed with failures": (
        "invalid_job_state",
        lambda w: payout_job_cancel(job_id=w["failing_job"].pk, actor=w["staff"]),
    ),
    "retry a job without failures": (
        "no_failed_entries",
        lambda w: payout_job_retry_failed(job_id=w["running_job"].pk, actor=w["staff"]),
    ),
    "retry a completed job": (
        "invalid_job_state",
        lambda w: payout_job_retry_failed(job_id=w["done_job"].pk, actor=w["staff"]),
    ),
    "retry entries that did not fail": (
        "no_failed_entries",
        lambda w: payout_job_retry_failed(
            job_id=w["failing_job"].pk,
            actor=w["staff"],
            entry_ids=list(
                PayoutEntry.objects.filter(job=w["failing_job"], status="completed").values_list(
                    "pk", flat=True
                )
            ),
        ),
    ),
    "control an unknown job": (
        "job_not_found",
        lambda w: payout_job_pause(job_id=10**9, actor=w["staff"]),
    ),
    "overdraw a wallet": (
        "insufficient_funds",
        lambda w: transfers_post(
            transfers=[
                TransferSpec(_wallet(w["open"]), _wallet(w["awaiting"]), 10**9, "transfer", "a"),
            ]
        ),
    ),
    "overdraw a challenge's escrow": (
        "insufficient_funds",
        lambda w: transfer_post(
            debit_account_id=w["running"].escrow_id,
            credit_account_id=_wallet(w["running"]),
            amount=10**9,
            kind="payout",
            idempotency_key="too-much",
        ),
    ),
    "post a batch where one transfer is invalid": (
        "invalid_amount",
        lambda w: transfers_post(
            transfers=[
                TransferSpec(_wallet(w["open"]), _wallet(w["awaiting"]), 1, "transfer", "ok"),
                TransferSpec(_wallet(w["open"]), _wallet(w["awaiting"]), 0, "transfer", "zero"),
            ]
        ),
    ),
    "deposit to an unknown user": (
        "user_not_found",
        lambda w: wallet_deposit(
            user_id=10**9, amount=5, actor=w["staff"], idempotency_key="to-nobody"
        ),
    ),
    "link a malformed Stripe account": (
        "invalid_stripe_account",
        lambda w: connected_account_link(
            user_id=w["staff"].pk, stripe_account_id="bank_1", payouts_enabled=True, actor=None
        ),
    ),
    "link another user's Stripe account": (
        "stripe_account_taken",
        lambda w: connected_account_link(
            user_id=w["staff"].pk,
            stripe_account_id=ConnectedAccount.objects.first().stripe_account_id,
            payouts_enabled=True,
            actor=None,
        ),
    ),
}


def _without_stripe(call: Callable[[], object]) -> object:
    with override_settings(STRIPE_API_KEY=""):
        return call()


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_refused_service_call_changes_nothing(world, case):
    code, call = REFUSALS[case]
    before = snapshot()
    with pytest.raises(DomainError) as refused:
        call(world)
    assert refused.value.code == code
    assert snapshot() == before
    jobs = [world["running_job"].pk, world["done_job"].pk, world["failing_job"].pk]
    assert payout_jobs_audit(job_ids=jobs).ok


@pytest.mark.parametrize(
    ("direction", "reported"),
    [
        # One unit more than the unpaid money: the fee posts, then the guard refuses.
        ("in", "escrow holds"),
        # One unit less: not even the fee can leave the escrow.
        ("out", "keys of no entry"),
    ],
)
def test_finalize_refuses_an_escrow_that_does_not_hold_the_unpaid_money(staff, direction, reported):
    # Given a job with one entry left to pay, whose escrow gained or lost 1 unit by a transfer
    # no entry explains
    challenge = challenge_seed(stakers=4, seed=37)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    expand_inline(job.pk)
    after = 0
    while PayoutEntry.objects.filter(job=job, status="pending").count() > 1:
        after = payout_batch_ledger(job_id=job.pk, after_id=after, limit=1).last_id
    last = PayoutEntry.objects.get(job=job, status="pending")
    accounts = [challenge.escrow_id, _wallet(challenge)]
    transfer_post(
        debit_account_id=accounts[direction == "in"],
        credit_account_id=accounts[direction == "out"],
        amount=1,
        kind="transfer",
        idempotency_key="stray",
    )
    transfers = set(Transfer.objects.values_list("idempotency_key", flat=True))
    # When the last batch pays the last entry, which makes the job's last batch finalize it
    assert payout_batch_ledger(job_id=job.pk, after_id=after).claimed == 1
    # Then the finalize refused (LedgerMismatch): the last payout is the only money that moved,
    # no fee was taken, the challenge is not completed, and the job is failed with the reason
    # for staff; finalizing again changes nothing
    moved = set(Transfer.objects.values_list("idempotency_key", flat=True)) - transfers
    assert moved == {f"payout:{last.pk}"}
    money = snapshot()[:3]
    assert payout_job_finalize(job_id=job.pk) is False
    assert snapshot()[:3] == money
    assert not Transfer.objects.filter(idempotency_key=f"fee:{job.pk}").exists()
    assert Challenge.objects.get(pk=challenge.pk).status == Challenge.Status.RESOLVING
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.FAILED
    assert f"job {job.pk}: escrow {challenge.escrow_id}" in job.error
    # And the audit reports the escrow
    assert any(reported in v for v in payout_jobs_audit(job_ids=[job.pk]).violations)


@pytest.fixture
def paid_stripe_job(staff, fake_stripe):
    challenge = stripe_challenge_seed(fake_stripe, stakers=4, seed=38)
    job = challenge_resolve(
        challenge_id=challenge.pk, result="challenger_won", actor=staff, rail="stripe"
    )
    expand_inline(job.pk)
    payout_batch_stripe(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    return job


def _reverse(entry: PayoutEntry, *, amount: int, reversal_id: str = "trr_1", **transfer) -> int:
    """Apply a ``transfer.reversed`` for ``entry`` listing one reversal; the amount taken back."""
    reversal = {"id": reversal_id, "amount": amount, "created": 1}
    with transaction.atomic():
        return stripe_transfer_reversed(
            event_id="evt_test",
            transfer={
                "id": entry.stripe_transfer_id,
                "metadata": {"entry_id": str(entry.pk)},
                "reversals": {"data": [reversal], "has_more": False},
            }
            | transfer,
        )


@pytest.mark.parametrize(
    "transfer",
    [
        {"id": "tr_someone_elses"},
        {"metadata": {"entry_id": "999999999"}},
        {"metadata": {}},
    ],
    ids=["another transfer id", "another entry", "no entry"],
)
def test_a_reversal_that_does_not_match_the_entry_changes_nothing(paid_stripe_job, transfer):
    entry = paid_stripe_job.entries.order_by("id").first()
    before = snapshot()
    assert _reverse(entry, amount=entry.amount, **transfer) == 0
    assert snapshot() == before


def test_a_reversal_of_a_reversed_entry_changes_nothing(paid_stripe_job):
    entry = paid_stripe_job.entries.order_by("id").first()
    assert _reverse(entry, amount=entry.amount) == entry.amount
    before = snapshot()
    assert _reverse(entry, amount=entry.amount) == 0
    assert snapshot() == before


def test_a_reversal_above_the_entry_changes_nothing(paid_stripe_job):
    # Given a paid entry, When Stripe reports a reversal of more than the entry was paid
    entry = paid_stripe_job.entries.order_by("id").first()
    before = snapshot()
    # Then it is acknowledged (never refused: Stripe would send it again) and moves nothing
    assert _reverse(entry, amount=entry.amount * 10) == 0
    assert snapshot() == before
    assert payout_jobs_audit(job_ids=[paid_stripe_job.pk]).ok
