"""Operations services: the dead-letter queue and the audit trail."""

from datetime import datetime
from functools import partial
from typing import Any

from celery import uuid
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, NotFound
from core.metrics import DEAD_LETTERS
from core.models import AuditEntry, DeadLetter
from core.queues import send_task
from core.retention import rows_delete_batched


def audit_record(
    *, actor: Any, action: str, target_type: str, target_id: object, details: dict | None = None
) -> AuditEntry:
    """Append one staff action to the audit trail (call it inside the action's transaction)."""
    return AuditEntry.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        details=details or {},
    )


def dead_letter_record(
    *,
    task_id: str,
    task_name: str,
    args: list,
    kwargs: dict,
    queue: str,
    error: str,
    traceback: str,
    attempts: int,
    subject: str = "",
) -> None:
    """Store a task's final failure. Idempotent per task id: a second report updates the row.

    Counted in ``stakehold_dead_letters_recorded_total`` once the row commits.
    """
    _, created = DeadLetter.objects.update_or_create(
        task_id=task_id,
        defaults={
            "task_name": task_name,
            "args": args,
            "kwargs": kwargs,
            "queue": queue,
            "error": error[:10_000],
            "traceback": traceback[:50_000],
            "attempts": attempts,
            "subject": subject,
        },
    )
    if created:
        transaction.on_commit(partial(DEAD_LETTERS.inc, task=task_name))


def dead_letter_replay(*, dead_letter_id: int, actor: Any) -> DeadLetter:
    """Send a dead-lettered task again with its original arguments and mark the row replayed.

    The row is locked so two staff members replaying at once send the task once; the message
    leaves only after the transaction commits.
    """
    with transaction.atomic(durable=True):
        letter = DeadLetter.objects.select_for_update().filter(pk=dead_letter_id).first()
        if letter is None:
            raise NotFound("No such dead letter.")
        if letter.status != DeadLetter.Status.OPEN:
            raise Conflict("This dead letter was already replayed.", code="already_replayed")
        letter.replay_task_id = uuid()
        letter.status = DeadLetter.Status.REPLAYED
        letter.replayed_at = timezone.now()
        letter.replayed_by = actor
        letter.save(update_fields=["replay_task_id", "status", "replayed_at", "replayed_by"])
        audit_record(
            actor=actor,
            action="dead_letter.replay",
            target_type="dead_letter",
            target_id=letter.pk,
            details={"task_name": letter.task_name, "replay_task_id": letter.replay_task_id},
        )
        transaction.on_commit(
            partial(
                send_task,
                letter.task_name,
                args=letter.args,
                kwargs=letter.kwargs,
                task_id=letter.replay_task_id,
            )
        )
    return letter


def dead_letters_prune(
    *, replayed_before: datetime, batch_size: int, until: float | None = None
) -> int:
    """Delete dead letters replayed before ``replayed_before``; open ones are never deleted
    (they wait for staff). Batched and safe to run twice at once (``rows_delete_batched``)."""
    return rows_delete_batched(
        table=DeadLetter._meta.db_table,
        condition="status = 'replayed' AND replayed_at < %(before)s",
        params={"before": replayed_before},
        batch_size=batch_size,
        until=until,
    )
