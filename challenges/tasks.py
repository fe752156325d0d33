"""Beat tasks of the challenge lifecycle (scheduler queue, every minute; see migration 0002).

Thin wrappers: each calls one service that is idempotent and safe to run concurrently.
"""

from celery import shared_task

from challenges.services import challenges_send_deadline_warnings, challenges_sweep_deadlines


@shared_task(time_limit=240, soft_time_limit=200)
def challenges_sweep_deadlines_task() -> None:
    challenges_sweep_deadlines()


@shared_task(time_limit=240, soft_time_limit=200)
def challenges_send_deadline_warnings_task() -> int:
    return challenges_send_deadline_warnings()
