"""The two ways of paying winners that the engine is measured against, in the same run.

(a) ``per_transaction``: the source documents' algorithm -- take 500 pending entries at a
    time and pay each one in its own database transaction (wallet credit, ledger transfer,
    entry marked, job progress), one after the other.
(b) ``task_per_payout``: one Celery task per payout, each doing that same transaction, run by
    real worker processes.

Both pay through ``entry_pay_alone``, so they differ from each other only in how the work is
driven, and from the engine in doing it row by row.
"""

import time
from functools import partial

from django.db import transaction

from core.queues import send_task
from ledger.models import Account, Transfer
from ledger.services import transfer_post
from payouts.models import PayoutEntry, PayoutJob
from payouts.services.engine import payout_job_counters_bump

SOURCE_BATCH = 500
ENTRY_PAY_ALONE_TASK = "proof.entry_pay_alone"


def entry_pay_alone(*, entry_id: int) -> bool:
    """Pay one pending entry in its own transaction; False if it was not pending any more."""
    with transaction.atomic(durable=True):
        entry = (
            PayoutEntry.objects.select_for_update()
            .select_related("job__challenge")
            .filter(pk=entry_id, status=PayoutEntry.Status.PENDING)
            .first()
        )
        if entry is None:
            return False
        wallet_id = Account.objects.values_list("pk", flat=True).get(
            kind=Account.Kind.USER_WALLET, user_id=entry.user_id
        )
        transfer_post(
            debit_account_id=entry.job.challenge.escrow_id,
            credit_account_id=wallet_id,
            amount=entry.amount,
            kind=Transfer.Kind.PAYOUT,
            idempotency_key=f"payout:{entry.pk}",
        )
        PayoutEntry.objects.filter(pk=entry.pk).update(status=PayoutEntry.Status.COMPLETED)
        payout_job_counters_bump(job_id=entry.job_id, completed=1, paid_amount=entry.amount)
    return True


def per_transaction_run(*, job_id: int) -> float:
    """Pay every pending entry of a job the source documents' way; return payouts/s."""
    paid = 0
    started = time.perf_counter()
    while True:
        ids = list(
            PayoutEntry.objects.filter(job_id=job_id, status=PayoutEntry.Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)[:SOURCE_BATCH]
        )
        if not ids:
            break
        paid += sum(entry_pay_alone(entry_id=entry_id) for entry_id in ids)
    return paid / (time.perf_counter() - started)


def task_per_payout_run(*, job_id: int, timeout: float = 1_800) -> float:
    """Send one task per pending entry and wait until workers paid them all; return payouts/s
    from the first message sent to the last entry paid."""
    ids = list(
        PayoutEntry.objects.filter(job_id=job_id, status=PayoutEntry.Status.PENDING)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    started = time.perf_counter()
    # By name: the benchmark workers' app (proof.bench_app) imports this module.
    send = partial(send_task, ENTRY_PAY_ALONE_TASK, queue="payouts")
    for entry_id in ids:
        send(args=[entry_id])
    deadline = time.monotonic() + timeout
    while PayoutJob.objects.get(pk=job_id).completed_count < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the task-per-payout baseline did not finish")
        time.sleep(0.05)
    return len(ids) / (time.perf_counter() - started)
