"""Beat tasks of the challenge lifecycle (scheduler queue, every minute; see migration 0002).

Thin wrappers: each calls one service that is idempotent and safe to run concurrently.
"""

from celery import shared_task

from challenges.models import Challenge
from challenges.services import challenges_send_deadline_warnings, challenges_sweep_deadlines
from challenges.signals import challenges_cancelled


@shared_task(time_limit=240, soft_time_limit=200)
def challenges_sweep_deadlines_task() -> None:
    result = challenges_sweep_deadlines()
    if result.cancelled:
        challenges_cancelled.send(sender=Challenge, challenge_ids=result.cancelled)


@shared_task(time_limit=240, soft_time_limit=200)
def challenges_send_deadline_warnings_task() -> int:
    return challenges_send_deadline_warnings()
