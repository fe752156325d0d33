"""Shared checks for payout tests: what every settled challenge must look like."""

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict

from challenges.models import Challenge, Stake
from ledger.models import Account
from ledger.selectors import ledger_check
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.connected_accounts import connected_accounts_seed
from payouts.services.engine import (
    SLICE_TASK,
    payout_batch_ledger,
    payout_job_expand,
    payout_job_expand_chunk,
    payout_job_notify,
    payout_job_slice,
)
from payouts.services.settlement import StakeRow, settlement_compute
from proof.seeding import challenge_seed


def stripe_challenge_seed(fake, *, stakers: int, seed: int, unconnected: int = 0) -> Challenge:
    """A challenge of ``stakers`` (half on ``yes``) whose winners have Stripe accounts with
    payouts enabled at ``fake``, except the first ``unconnected`` of them."""
    challenge = challenge_seed(stakers=stakers, yes_share=0.5, seed=seed)
    winners = list(
        challenge.stakes.filter(side="yes").order_by("id").values_list("user_id", flat=True)
    )
    accounts = connected_accounts_seed(
        challenge_id=challenge.pk, except_user_ids=winners[:unconnected]
    )
    fake.accounts_put([{"id": account, "payouts_enabled": True} for account in accounts])
    return challenge


def expand_inline(job_id: int) -> None:
    """Expand a job in this process: settle it, then create every slice of entries."""
    expansion = payout_job_expand(job_id=job_id)
    start = expansion.next_stake_id if expansion else None
    while start is not None:
        start = payout_job_expand_chunk(
            job_id=job_id, terms=asdict(expansion.terms), from_stake_id=start
        )


def slice_messages(sent: Iterable) -> list[list[int]]:
    """The ``starts`` of each slice task among ``sent`` (captured on-commit callbacks)."""
    return [c.keywords["args"][2] for c in sent if _is_slice(c)]


def _is_slice(callback) -> bool:
    return getattr(callback.func, "__name__", "") == "send_task" and callback.args == (SLICE_TASK,)


def slices_run_inline(sent: Iterable, capture: Callable) -> list[list[int]]:
    """Run in this process, first in first out, what ``sent`` (on-commit callbacks captured
    by ``capture``, pytest-django's ``django_capture_on_commit_callbacks``) would do: every
    slice task and the slices they send; the other callbacks (progress, finalize, the
    notification task) as they come. Returns the ``starts`` of every slice run."""
    queue, ran = deque(sent), []
    while queue:
        callback = queue.popleft()
        if not _is_slice(callback):
            callback()
            continue
        job_id, terms, starts, size = callback.keywords["args"]
        ran.append(starts)
        with capture() as more:
            payout_job_slice(job_id=job_id, terms=terms, starts=starts, size=size)
        queue.extend(more)
    return ran


def run_job_inline(job_id: int, *, max_batches: int | None = None) -> int:
    """Drive a job in this process (expand, one chain of batches, and the notifications once
    it finished); return the number of batches run."""
    expand_inline(job_id)
    after, batches = 0, 0
    while max_batches is None or batches < max_batches:
        outcome = payout_batch_ledger(job_id=job_id, after_id=after)
        batches += 1
        if not outcome.claimed:
            payout_job_notify(job_id=job_id)
            break
        after = outcome.last_id
    return batches


def expected_amounts(challenge: Challenge, winning_side: str | None, fee_bps: int):
    stakes = list(Stake.objects.filter(challenge=challenge).values_list("id", "user_id", "side"))
    amounts = dict(Stake.objects.filter(challenge=challenge).values_list("id", "amount"))
    result = settlement_compute(
        stakes=[StakeRow(i, side, amounts[i]) for i, _, side in stakes],
        winning_side=winning_side,
        fee_bps=fee_bps,
    )
    user_of = {i: user for i, user, _ in stakes}
    return {user_of[i]: amount for i, amount in result.amounts.items()}, result.fee


def assert_settled(job: PayoutJob, *, winning_side: str | None, wallets_before: dict[int, int]):
    """Every staker got exactly the oracle's amount once, the fee is collected, escrow is 0."""
    job.refresh_from_db()
    challenge = job.challenge
    challenge.refresh_from_db()
    expected, fee = expected_amounts(challenge, winning_side, job.fee_bps)
    assert job.status == PayoutJob.Status.COMPLETED
    assert job.completed_count == job.total_entries == len(expected)
    assert job.paid_amount == job.total_amount == sum(expected.values())
    assert job.fee_amount == fee
    wallets = dict(
        Account.objects.filter(kind="user_wallet", user_id__in=wallets_before).values_list(
            "user_id", "balance"
        )
    )
    for user_id, before in wallets_before.items():
        assert wallets[user_id] == before + expected.get(user_id, 0), user_id
    assert Account.objects.get(pk=challenge.escrow_id).balance == 0
    assert not PayoutEntry.objects.filter(job=job).exclude(status="completed").exists()
    report = ledger_check()
    assert report.ok, report.violations


def wallet_balances(challenge: Challenge) -> dict[int, int]:
    users = Stake.objects.filter(challenge=challenge).values("user_id")
    return dict(
        Account.objects.filter(kind="user_wallet", user_id__in=users).values_list(
            "user_id", "balance"
        )
    )
