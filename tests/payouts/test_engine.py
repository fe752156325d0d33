"""The job engine driven in-process: expand, batches, finalize, controls, watchdog."""

import threading
from dataclasses import asdict, dataclass
from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from challenges.models import Challenge
from challenges.services import challenges_sweep_deadlines
from challenges.signals import challenges_cancelled
from core.errors import Conflict
from core.models import AuditEntry
from ledger.models import Account, Transfer
from ledger.services import system_account_id
from notifications.models import Notification
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.engine import (
    BATCH_TASKS,
    CONTINUE_PRIORITY,
    EXPAND_PRIORITY,
    NOTIFY_TASK,
    START_PRIORITY,
    payout_batch_ledger,
    payout_job_counters_bump,
    payout_job_expand,
    payout_job_finalize,
    payout_job_notify,
    payout_job_slice,
)
from payouts.services.jobs import (
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
    refund_jobs_create_for_cancelled,
)
from payouts.services.watchdog import payout_watchdog
from proof.seeding import challenge_seed
from tests.payouts.helpers import (
    assert_settled,
    expand_inline,
    run_job_inline,
    slice_messages,
    slices_run_inline,
    wallet_balances,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _small_batches(settings):
    settings.PAYOUT_BATCH_SIZE = 3
    settings.PAYOUT_PARALLELISM = 2
    settings.PAYOUT_EXPAND_CHUNK = 4
    settings.PAYOUT_START_SIZE = 4
    settings.PLATFORM_FEE_BPS = 500


def test_a_stripe_job_takes_one_batch_per_thread_and_a_ledger_job_payout_parallelism(
    staff, settings
):
    # Given Stripe workers of 16 threads, and ledger jobs of 2 batches at once
    settings.STRIPE_API_KEY = "sk_test_unused"
    settings.STRIPE_PARALLELISM = 16
    # When a challenge is resolved on each rail
    on_stripe, on_ledger = (
        challenge_resolve(
            challenge_id=challenge_seed(stakers=4, seed=seed).pk,
            result="challenger_won",
            actor=staff,
            rail=rail,
        )
        for seed, rail in ((1, "stripe"), (2, "ledger"))
    )
    # Then the Stripe job runs 16 batches at once, the ledger job 2
    assert (on_stripe.parallelism, on_ledger.parallelism) == (16, 2)


@pytest.mark.parametrize(
    ("result", "winning_side"),
    [("challenger_won", "yes"), ("challenged_won", "no"), ("draw", None)],
)
def test_resolved_challenge_pays_everyone_exactly_once(staff, result, winning_side):
    # Given a challenge with 10 stakers awaiting resolution
    challenge = challenge_seed(stakers=10, yes_share=0.4, seed=11)
    before = wallet_balances(challenge)
    # When staff resolve it and the job runs to the end (batches of 3)
    job = challenge_resolve(challenge_id=challenge.pk, result=result, actor=staff)
    batches = run_job_inline(job.pk)
    # Then every staker got the settlement's amount, the fee went to the platform, escrow is 0
    assert_settled(job, winning_side=winning_side, wallets_before=before)
    assert batches > 2
    job.refresh_from_db()
    assert job.kind == ("refund" if winning_side is None else "payout")
    fees = Account.objects.get(pk=system_account_id("platform_fees"))
    assert fees.balance == job.fee_amount
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.COMPLETED
    assert challenge.result == result
    # And every staker holds exactly one outcome notification: the winners' (or refunded
    # stakers') with what they received, the losers' with their stake
    notes = Notification.objects.filter(challenge=challenge)
    stakes = dict(challenge.stakes.values_list("user_id", "side"))
    amounts = dict(challenge.stakes.values_list("user_id", "amount"))
    paid = dict(job.entries.values_list("user_id", "amount"))
    assert sorted(notes.values_list("user_id", flat=True)) == sorted(stakes)
    for note in notes:
        if note.user_id in paid:
            kind = "stake_refunded" if winning_side is None else "payout_completed"
            assert (note.kind, note.data["amount"]) == (kind, paid[note.user_id])
        else:
            assert stakes[note.user_id] != winning_side
            assert (note.kind, note.data["amount"]) == ("challenge_lost", amounts[note.user_id])
            assert note.body.startswith(f"Your {amounts[note.user_id]} coin stake")
    # And running everything again changes nothing
    assert payout_job_finalize(job_id=job.pk) is False
    assert payout_batch_ledger(job_id=job.pk).claimed == 0
    assert_settled(job, winning_side=winning_side, wallets_before=before)


def test_fee_is_taken_from_the_losing_pool_only(staff):
    challenge = challenge_seed(stakers=9, yes_share=1 / 3, min_amount=1000, max_amount=1000)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    run_job_inline(job.pk)
    job.refresh_from_db()
    # 3 winners of 1000, 6 losers of 1000: fee 5% of 6000; winners share 5700
    assert job.fee_amount == 300
    assert job.total_amount == 3000 + 5700
    assert set(job.entries.values_list("amount", flat=True)) == {2900}


def test_winning_side_without_stakes_refunds_everyone(staff):
    challenge = challenge_seed(stakers=4, yes_share=0)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    assert job.kind == PayoutJob.Kind.REFUND
    run_job_inline(job.pk)
    assert_settled(job, winning_side=None, wallets_before=before)


def test_cancelled_challenge_is_refunded_and_stays_cancelled(staff):
    challenge = challenge_seed(stakers=7, status="active")
    before = wallet_balances(challenge)
    job = challenge_cancel(challenge_id=challenge.pk, actor=staff)
    run_job_inline(job.pk)
    assert_settled(job, winning_side=None, wallets_before=before)
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.CANCELLED
    assert AuditEntry.objects.filter(action="challenge.cancel", actor=staff).exists()
    with pytest.raises(Conflict) as exc:
        challenge_cancel(challenge_id=challenge.pk, actor=staff)
    assert exc.value.code == "challenge_not_cancellable"


def test_pause_stops_batches_and_resume_finishes(staff, django_capture_on_commit_callbacks):
    challenge = challenge_seed(stakers=10)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenged_won", actor=staff)
    run_job_inline(job.pk, max_batches=1)
    # When staff pause after one batch
    payout_job_pause(job_id=job.pk, actor=staff)
    # Then batches pay nobody and do not re-enqueue
    with django_capture_on_commit_callbacks() as sent:
        assert payout_batch_ledger(job_id=job.pk).claimed == 0
    assert sent == []
    job.refresh_from_db()
    assert (job.status, job.completed_count) == ("paused", 3)
    # When they resume, fresh batches are sent and the job completes
    with django_capture_on_commit_callbacks() as sent:
        payout_job_resume(job_id=job.pk, actor=staff)
    assert len(sent) == 1  # one callback fanning out `parallelism` batch tasks
    after = 0
    while outcome := payout_batch_ledger(job_id=job.pk, after_id=after):
        if not outcome.claimed:
            break
        after = outcome.last_id
    assert_settled(job, winning_side="no", wallets_before=before)
    actions = list(
        AuditEntry.objects.filter(target_id=str(job.pk)).values_list("action", flat=True)
    )
    assert {"payout_job.pause", "payout_job.resume"} <= set(actions)


def test_cancel_leaves_cancelled_entries_unpaid_and_the_escrow_refundable(staff):
    challenge = challenge_seed(stakers=10, yes_share=0.7)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    run_job_inline(job.pk, max_batches=1)
    # When staff cancel after one batch
    job = payout_job_cancel(job_id=job.pk, actor=staff)
    # Then the unpaid entries are cancelled, never paid, and the job says so
    assert job.status == PayoutJob.Status.CANCELLED
    assert (job.completed_count, job.cancelled_count) == (3, 4)
    assert payout_batch_ledger(job_id=job.pk).claimed == 0
    cancelled = PayoutEntry.objects.filter(job=job, status="cancelled")
    assert cancelled.count() == 4
    keys = [f"payout:{pk}" for pk in cancelled.values_list("pk", flat=True)]
    assert not Transfer.objects.filter(idempotency_key__in=keys).exists()
    # And the escrow holds exactly what was not paid: the cancelled amounts plus the fee
    escrow = Account.objects.get(pk=challenge.escrow_id)
    assert escrow.balance == sum(cancelled.values_list("amount", flat=True)) + job.fee_amount
    assert escrow.balance == challenge.yes_total + challenge.no_total - job.paid_amount
    # And the job cannot be controlled any more
    for control in (payout_job_pause, payout_job_resume, payout_job_cancel):
        with pytest.raises(Conflict) as exc:
            control(job_id=job.pk, actor=staff)
        assert exc.value.code == "invalid_job_state"


def test_failed_entries_end_completed_with_failures_then_retry_pays_them(staff):
    # Given a job where two entries failed for good on another rail
    challenge = challenge_seed(stakers=8)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    expand_inline(job.pk)
    failed_ids = list(job.entries.order_by("id").values_list("pk", flat=True)[:2])
    with transaction.atomic():
        PayoutEntry.objects.filter(pk__in=failed_ids).update(
            status="failed", failure_reason="stripe_account_not_connected"
        )
        payout_job_counters_bump(job_id=job.pk, failed=2)
    # When the rest is paid
    run_job_inline(job.pk)
    # Then the job completed with failures, the fee was still collected, and the escrow holds
    # exactly the failed entries' money
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED_WITH_FAILURES
    failed_total = sum(
        PayoutEntry.objects.filter(pk__in=failed_ids).values_list("amount", flat=True)
    )
    assert Account.objects.get(pk=challenge.escrow_id).balance == failed_total
    assert Transfer.objects.filter(idempotency_key=f"fee:{job.pk}").exists()
    # When staff retry the failed entries, they are paid and the job completes
    job = payout_job_retry_failed(job_id=job.pk, actor=staff)
    assert (job.status, job.failed_count) == ("running", 0)
    after = 0
    while (outcome := payout_batch_ledger(job_id=job.pk, after_id=after)).claimed:
        after = outcome.last_id
    assert_settled(job, winning_side="yes", wallets_before=before)
    assert Transfer.objects.filter(kind="fee", idempotency_key=f"fee:{job.pk}").count() == 1
    with pytest.raises(Conflict) as exc:
        payout_job_retry_failed(job_id=job.pk, actor=staff)
    assert exc.value.code == "invalid_job_state"


def test_refund_jobs_for_cancelled_challenges_are_created_once(staff):
    # Given two cancelled challenges with stakes (as the deadline sweep leaves them), one
    # without stakes, and one that has its job already
    swept = [challenge_seed(stakers=3, status="cancelled") for _ in range(2)]
    escrow = Account.objects.create(kind="challenge_escrow", currency="coin")
    empty = Challenge.objects.create(
        title="empty",
        challenger_id=swept[0].challenger_id,
        escrow=escrow,
        due_date=timezone.now(),
        status="cancelled",
    )
    staffed = challenge_cancel(
        challenge_id=challenge_seed(stakers=2, status="pending").pk, actor=staff
    )
    # When refund jobs are created for all four, twice
    ids = [*(c.pk for c in swept), empty.pk, staffed.challenge_id]
    first = refund_jobs_create_for_cancelled(challenge_ids=ids)
    second = refund_jobs_create_for_cancelled(challenge_ids=ids)
    # Then each swept challenge got exactly one refund job, and they refund everyone
    assert second == []
    jobs = PayoutJob.objects.filter(pk__in=first)
    assert sorted(jobs.values_list("challenge_id", flat=True)) == [c.pk for c in swept]
    assert staffed.pk not in first
    for job in jobs:
        before = wallet_balances(job.challenge)
        run_job_inline(job.pk)
        assert_settled(job, winning_side=None, wallets_before=before)


def test_a_cancellation_opens_refund_jobs_for_the_challenges_it_names_only():
    # Given two cancelled challenges with stakes, of which the signal names one
    named, _ = (challenge_seed(stakers=3, status="cancelled") for _ in range(2))
    # When the signal's receiver runs for the named one
    challenges_cancelled.send(sender=Challenge, challenge_ids=[named.pk])
    # Then only that challenge has its refund job: the cost of a cancellation does not grow
    # with every challenge ever cancelled
    assert list(PayoutJob.objects.values_list("challenge_id", flat=True)) == [named.pk]


def test_a_refund_job_commits_with_its_cancellation_or_not_at_all():
    # Given two challenges past their deadline whose other side nobody took
    lonely = [challenge_seed(stakers=3, yes_share=1.0, status="pending") for _ in range(2)]
    ids = [c.pk for c in lonely]
    Challenge.objects.filter(pk__in=ids).update(due_date=timezone.now() - timedelta(minutes=1))

    # When a sweep cancels them and its transaction then fails (the worker dies before commit)
    def sweep_then_die() -> None:
        with transaction.atomic():
            assert challenges_sweep_deadlines().cancelled == ids
            assert PayoutJob.objects.filter(challenge_id__in=ids).count() == 2
            raise RuntimeError("killed before commit")

    with pytest.raises(RuntimeError, match="killed"):
        sweep_then_die()
    # Then neither the cancellations nor their refund jobs are left
    assert set(Challenge.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"pending"}
    assert not PayoutJob.objects.exists()
    # And a sweep that commits leaves each with exactly one refund job, which refunds everyone
    before = {c.pk: wallet_balances(c) for c in lonely}
    assert challenges_sweep_deadlines().cancelled == ids
    jobs = PayoutJob.objects.filter(challenge_id__in=ids, kind=PayoutJob.Kind.REFUND)
    assert sorted(jobs.values_list("challenge_id", flat=True)) == ids
    for job in jobs:
        run_job_inline(job.pk)
        assert_settled(job, winning_side=None, wallets_before=before[job.challenge_id])


def test_watchdog_restarts_stalled_jobs_once(staff, django_capture_on_commit_callbacks):
    running = challenge_resolve(
        challenge_id=challenge_seed(stakers=5).pk, result="draw", actor=staff
    )
    expand_inline(running.pk)
    queued = challenge_resolve(
        challenge_id=challenge_seed(stakers=5).pk, result="draw", actor=staff
    )
    long_ago = timezone.now() - timedelta(minutes=5)
    PayoutJob.objects.filter(pk__in=[running.pk, queued.pk]).update(updated_at=long_ago)
    # When the watchdog runs twice
    with django_capture_on_commit_callbacks() as sent:
        report = payout_watchdog()
    again = payout_watchdog()
    # Then the stalled running job gets batches and the queued one its expansion -- once
    assert report.restarted == [running.pk]
    assert report.expansions == [queued.pk]
    assert len(sent) == 2
    assert (again.restarted, again.expansions) == ([], [])


def test_watchdog_finishes_an_interrupted_cancellation(staff):
    job = challenge_resolve(challenge_id=challenge_seed(stakers=4).pk, result="draw", actor=staff)
    expand_inline(job.pk)
    # A cancel that died after its first step: job cancelled, entries still pending
    PayoutJob.objects.filter(pk=job.pk).update(status="cancelled")
    assert payout_watchdog().cancelled_entries == 4
    job.refresh_from_db()
    assert job.cancelled_count == 4
    assert payout_watchdog().cancelled_entries == 0


@pytest.mark.django_db(transaction=True)
def test_pause_committed_during_a_batch_rolls_the_batch_back(staff):
    challenge = challenge_seed(stakers=6)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    expand_inline(job.pk)
    locked, release = threading.Event(), threading.Event()

    def pause_slowly():
        # Staff's pause holds the job row while the batch below does its work.
        try:
            with transaction.atomic():
                PayoutJob.objects.select_for_update().get(pk=job.pk)
                PayoutJob.objects.filter(pk=job.pk).update(status="paused")
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    pauser = threading.Thread(target=pause_slowly)
    pauser.start()
    locked.wait(10)
    # When a batch that read "running" reaches the job counters while the pause commits
    threading.Timer(0.5, release.set).start()
    outcome = payout_batch_ledger(job_id=job.pk)
    pauser.join()
    # Then it paid nobody
    assert outcome.claimed == 0
    job.refresh_from_db()
    assert (job.status, job.completed_count, job.paid_amount) == ("paused", 0, 0)
    assert not Transfer.objects.filter(kind="refund").exists()
    assert set(job.entries.values_list("status", flat=True)) == {"pending"}


def test_watchdog_resumes_an_expansion_that_lost_a_slice(staff):
    # Given a job whose first slice of entries exists but whose next slice's task was lost
    challenge = challenge_seed(stakers=10)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    assert payout_job_expand(job_id=job.pk).next_stake_id is not None
    job.refresh_from_db()
    assert (job.status, job.total_entries, job.entries.count()) == ("running", 10, 4)
    PayoutJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    # When the watchdog runs, it sends the expansion again (not batches)
    report = payout_watchdog()
    assert (report.expansions, report.restarted) == ([job.pk], [])
    # And the expansion resumes, skipping what exists; then the job completes exactly
    run_job_inline(job.pk)
    assert_settled(job, winning_side=None, wallets_before=before)


def test_watchdog_resends_lost_notifications(staff):
    job = challenge_resolve(challenge_id=challenge_seed(stakers=5).pk, result="draw", actor=staff)
    expand_inline(job.pk)
    while payout_batch_ledger(job_id=job.pk).claimed:
        pass
    # The job finished a while ago, but its notification task never ran
    PayoutJob.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(minutes=5))
    assert payout_watchdog().notified == [job.pk]
    assert payout_job_notify(job_id=job.pk) == 5
    assert payout_job_notify(job_id=job.pk) == 0
    assert payout_watchdog().notified == []


def test_stakes_placed_by_users_are_settled_exactly(make_user, staff):
    from challenges.services import challenge_create, challenges_sweep_deadlines, stake_place

    # Given a challenge staked through the real staking service and past its deadline
    creator = make_user("creator", balance=1_000)
    due = timezone.now() + timedelta(hours=1)
    challenge = challenge_create(creator=creator, title="Will it rain?", due_date=due)
    stakes = [(creator, "yes", 300)]
    stakes += [(make_user(f"y{i}", balance=1_000), "yes", 100 + i) for i in range(3)]
    stakes += [(make_user(f"n{i}", balance=1_000), "no", 250 + 7 * i) for i in range(4)]
    for user, side, amount in stakes:
        stake_place(user=user, challenge_id=challenge.pk, side=side, amount=amount)
    challenges_sweep_deadlines(now=due + timedelta(seconds=1))
    before = wallet_balances(challenge)
    # When staff resolve it for the challenger and the job runs
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    run_job_inline(job.pk)
    # Then every winner got exactly the settlement's amount and the losers nothing more
    assert_settled(job, winning_side="yes", wallets_before=before)


def test_deadline_sweep_task_creates_the_refund_job(make_user):
    from challenges.services import challenge_create, stake_place
    from challenges.tasks import challenges_sweep_deadlines_task

    # Given a pending challenge that only its creator staked on, now past its deadline
    creator = make_user("lonely", balance=500)
    due = timezone.now() + timedelta(minutes=5)
    challenge = challenge_create(creator=creator, title="Nobody came", due_date=due)
    stake_place(user=creator, challenge_id=challenge.pk, side="yes", amount=200)
    before = wallet_balances(challenge)
    # When the beat's sweep task runs after the deadline
    with time_machine.travel(due + timedelta(minutes=1)):
        challenges_sweep_deadlines_task()
    # Then the challenge is cancelled and has a refund job that returns the stake
    challenge.refresh_from_db()
    assert challenge.status == Challenge.Status.CANCELLED
    job = PayoutJob.objects.get(challenge=challenge)
    assert job.kind == PayoutJob.Kind.REFUND
    run_job_inline(job.pk)
    assert_settled(job, winning_side=None, wallets_before=before)
    assert wallet_balances(challenge)[creator.pk] == 500


def _stake_ids(challenge: Challenge) -> list[int]:
    return list(challenge.stakes.order_by("id").values_list("id", flat=True))


# Stakes in the start of the jobs below, expanded as their task expands them (slices of 3,
# the batch size, after it).
START = 2


@dataclass(frozen=True)
class _Expanded:
    challenge: Challenge
    job: PayoutJob
    before: dict[int, int]  # wallet balances before the expansion paid the start
    terms: dict
    sent: list  # the on-commit callbacks of the expansion


def _draw_expanded(staff, capture, *, stakers: int, seed: int) -> _Expanded:
    """A draw of ``stakers`` stakers resolved, then expanded as its task does (a start of
    ``START``); ``capture`` is pytest-django's ``django_capture_on_commit_callbacks``."""
    challenge = challenge_seed(stakers=stakers, seed=seed)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    with capture() as sent:
        expansion = payout_job_expand(job_id=job.pk, start_size=START)
    return _Expanded(challenge, job, before, asdict(expansion.terms), sent)


def test_a_ledger_job_s_start_is_paid_by_its_expansion_and_its_slices_as_they_are_created(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 12 stakers (slices of 3, two chains in parallel), when it expands (its
    # task is sent at EXPAND_PRIORITY, ahead of the jobs already paying; kombu's Redis
    # transport serves lower numbers first)
    assert START_PRIORITY < EXPAND_PRIORITY < CONTINUE_PRIORITY
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=12, seed=21)
    challenge, job, before, sent = expanded.challenge, expanded.job, expanded.before, expanded.sent
    # Then its first slice holds 2 stakes, created paid by the expansion itself: their
    # transfers, wallets, the job's counters and the escrow moved in its transaction
    entries = list(job.entries.all())
    assert [e.status for e in entries] == [PayoutEntry.Status.COMPLETED] * 2
    assert all(e.completed_at for e in entries)
    keys = set(Transfer.objects.filter(kind="refund").values_list("idempotency_key", flat=True))
    assert keys == {f"payout:{e.pk}" for e in entries}
    wallets = wallet_balances(challenge)
    for entry in entries:
        assert wallets[entry.user_id] == before[entry.user_id] + entry.amount
    job.refresh_from_db()
    assert (job.completed_count, job.paid_amount) == (2, sum(e.amount for e in entries))
    escrow = Account.objects.get(pk=challenge.escrow_id).balance
    assert escrow == job.total_amount - job.paid_amount
    # And the other 10 stakes are 4 slices (3, 3, 3, 1) dealt to two chains at
    # CONTINUE_PRIORITY; no batch is sent
    ids = _stake_ids(challenge)
    assert slice_messages(sent) == [[ids[2], ids[8]], [ids[5], ids[11]]]
    assert {c.keywords["priority"] for c in sent if c.keywords.get("args")} == {CONTINUE_PRIORITY}
    assert not [c for c in sent if c.func.__name__ == "payout_batches_enqueue"]
    # And each slice creates its entries paid, then sends the next of its chain; the last
    # one finalizes the job: everyone paid exactly once, no entry ever pending
    ran = slices_run_inline(sent, django_capture_on_commit_callbacks)
    assert ran == [[ids[2], ids[8]], [ids[5], ids[11]], [ids[8]], [ids[11]]]
    assert_settled(job, winning_side=None, wallets_before=before)


def test_a_job_whose_rest_fits_one_slice_sends_one_chain(staff, django_capture_on_commit_callbacks):
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=5, seed=22)
    # (the 3 stakes after the start are one slice of 3)
    assert slice_messages(expanded.sent) == [[_stake_ids(expanded.challenge)[2]]]


def test_a_duplicated_slice_creates_and_pays_nothing_and_its_chain_ends(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 12 stakers whose first chain's first slice ran
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=12, seed=27)
    job, terms = expanded.job, expanded.terms
    first = slice_messages(expanded.sent)[0]
    with django_capture_on_commit_callbacks() as after_first:
        assert payout_job_slice(job_id=job.pk, terms=terms, starts=first, size=3) == 3
    assert slice_messages(after_first) == [first[1:]]
    transfers = Transfer.objects.count()
    # When the same message runs again
    with django_capture_on_commit_callbacks() as after_copy:
        created = payout_job_slice(job_id=job.pk, terms=terms, starts=first, size=3)
    # Then it creates and pays nothing, and sends no next slice: its copy's chain goes on
    assert created == 0
    assert Transfer.objects.count() == transfers
    assert slice_messages(after_copy) == []
    # Unless the broker handed it back after its worker died: the next slice is sent again,
    # in case the worker died between the commit and the sending
    with django_capture_on_commit_callbacks() as after_redelivery:
        payout_job_slice(job_id=job.pk, terms=terms, starts=first, size=3, redelivered=True)
    assert slice_messages(after_redelivery) == [first[1:]]
    job.refresh_from_db()
    assert job.completed_count == 5


def test_a_resumed_ledger_expansion_sends_every_slice_once_unchained(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 12 stakers whose second chain was lost after its first slice
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=12, seed=28)
    job = expanded.job
    chains = [c for c in expanded.sent if c.func.__name__ == "send_task"]
    assert len(chains) == 2
    slices_run_inline(chains[:1], django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert (job.status, job.completed_count) == (PayoutJob.Status.RUNNING, 8)
    # When the watchdog sends its expansion again
    with django_capture_on_commit_callbacks() as resumed:
        payout_job_expand(job_id=job.pk, start_size=START)
    # Then every slice is sent once, on its own, and the missing ones pay the job in full
    ids = _stake_ids(expanded.challenge)
    assert slice_messages(resumed) == [[ids[2]], [ids[5]], [ids[8]], [ids[11]]]
    slices_run_inline(resumed, django_capture_on_commit_callbacks)
    assert_settled(job, winning_side=None, wallets_before=expanded.before)


def test_a_slice_that_cannot_be_paid_as_created_is_left_to_a_batch(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 12 stakers, one of whose wallets in its first chain's slice the payment
    # cannot find (a wallet in another currency)
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=12, seed=30)
    job, terms = expanded.job, expanded.terms
    first = slice_messages(expanded.sent)[0]
    lost = expanded.challenge.stakes.get(pk=first[0])
    Account.objects.filter(user_id=lost.user_id, kind="user_wallet").update(currency="XXX")
    # When that slice runs
    with django_capture_on_commit_callbacks() as after:
        assert payout_job_slice(job_id=job.pk, terms=terms, starts=first, size=3) == 3
    # Then its entries are created pending and paid by nobody yet, a batch is sent for them
    # and the chain goes on
    assert job.entries.filter(status=PayoutEntry.Status.PENDING).count() == 3
    job.refresh_from_db()
    assert job.completed_count == 2
    batches = [c.keywords for c in after if c.func.__name__ == "payout_batches_enqueue"]
    assert [(kw["count"], kw["limit"], kw["priority"]) for kw in batches] == [
        (1, 3, CONTINUE_PRIORITY)
    ]
    assert slice_messages(after) == [first[1:]]


def test_the_slices_of_a_paused_job_are_created_pending_and_paid_on_resume(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 12 stakers paused right after its expansion
    expanded = _draw_expanded(staff, django_capture_on_commit_callbacks, stakers=12, seed=29)
    job = expanded.job
    payout_job_pause(job_id=job.pk, actor=staff)
    # When its slices run
    slices_run_inline(expanded.sent, django_capture_on_commit_callbacks)
    # Then they are created pending and pay nobody, and send no batch
    assert job.entries.filter(status=PayoutEntry.Status.PENDING).count() == 10
    job.refresh_from_db()
    assert job.completed_count == 2
    # And resume's batches pay them
    with django_capture_on_commit_callbacks() as resumed:
        payout_job_resume(job_id=job.pk, actor=staff)
    assert [c.func.__name__ for c in resumed] == ["payout_batches_enqueue"]
    run_job_inline(job.pk)
    assert_settled(job, winning_side=None, wallets_before=expanded.before)


def test_a_job_its_start_holds_is_paid_and_closed_by_its_expansion_alone(
    staff, settings, django_capture_on_commit_callbacks
):
    # Given a challenge of 3 stakers and starts of 4
    challenge = challenge_seed(stakers=3, seed=25)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="challenger_won", actor=staff)
    # When its expansion runs
    with django_capture_on_commit_callbacks(execute=True) as sent:
        payout_job_expand(job_id=job.pk, start_size=settings.PAYOUT_START_SIZE)
    # Then the job is paid, finalized and its notifications sent, with no batch and no slice
    assert_settled(job, winning_side="yes", wallets_before=before)
    tasks = [c.args[0] for c in sent if getattr(c.func, "__name__", "") == "send_task"]
    assert tasks == [NOTIFY_TASK]
    assert not [c for c in sent if getattr(c.func, "__name__", "") == "payout_batches_enqueue"]


def test_a_start_that_cannot_be_paid_as_created_is_left_to_a_start_batch(
    staff, settings, django_capture_on_commit_callbacks
):
    # Given a job of 3 stakers, one of whose wallets the payment cannot find (a wallet in
    # another currency)
    challenge = challenge_seed(stakers=3, seed=26)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    lost = challenge.stakes.order_by("id").first()
    Account.objects.filter(user_id=lost.user_id, kind="user_wallet").update(currency="XXX")
    before = Transfer.objects.count()
    # When it expands
    with django_capture_on_commit_callbacks() as sent:
        payout_job_expand(job_id=job.pk, start_size=settings.PAYOUT_START_SIZE)
    # Then nothing was paid: the start is created pending, with a start batch ahead of the
    # queue, as any job's start was before a start paid itself
    assert not job.entries.exclude(status=PayoutEntry.Status.PENDING).exists()
    assert job.entries.count() == 3
    assert Transfer.objects.count() == before
    job.refresh_from_db()
    assert (job.completed_count, job.paid_amount) == (0, 0)
    batches = [c.keywords for c in sent if c.func.__name__ == "payout_batches_enqueue"]
    assert [(kw["count"], kw.get("limit")) for kw in batches] == [(1, 4)]


def test_the_batch_that_pays_the_last_open_entries_finalizes_with_no_follow_up(
    staff, django_capture_on_commit_callbacks
):
    # Given a job of 5 stakers whose entries all exist, 2 of them already paid
    challenge = challenge_seed(stakers=5, seed=23)
    before = wallet_balances(challenge)
    job = challenge_resolve(challenge_id=challenge.pk, result="draw", actor=staff)
    expand_inline(job.pk)
    assert payout_batch_ledger(job_id=job.pk, limit=2).claimed == 2
    # When a batch pays the last 3 (batches of 3)
    with django_capture_on_commit_callbacks() as sent:
        assert payout_batch_ledger(job_id=job.pk).claimed == 3
    # Then it sends no follow-up batch that would only find nothing: it finalized the job
    sent_tasks = [c.args[0] for c in sent if getattr(c.func, "__name__", "") == "send_task"]
    assert BATCH_TASKS[PayoutJob.Rail.LEDGER] not in sent_tasks
    assert NOTIFY_TASK in sent_tasks
    job.refresh_from_db()
    assert job.status == PayoutJob.Status.COMPLETED
    assert_settled(job, winning_side=None, wallets_before=before)


def test_the_database_refuses_to_delete_a_job_with_entries(staff):
    # Given a job whose entries exist (entries carry no per-row foreign-key check), and one
    # resolved but not yet expanded
    expanded = challenge_resolve(
        challenge_id=challenge_seed(stakers=3, seed=24).pk, result="draw", actor=staff
    )
    expand_inline(expanded.pk)
    bare = challenge_resolve(
        challenge_id=challenge_seed(stakers=3, seed=25).pk, result="draw", actor=staff
    )
    # When each is deleted behind the ORM's back
    delete = "DELETE FROM payouts_payoutjob WHERE id = %s"
    with (
        pytest.raises(IntegrityError, match="has entries"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(delete, [expanded.pk])
    # Then the one with entries stays, with them; the one without can go
    assert PayoutEntry.objects.filter(job_id=expanded.pk).count() == 3
    with connection.cursor() as cursor:
        cursor.execute(delete, [bare.pk])
        assert cursor.rowcount == 1
