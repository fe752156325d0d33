"""Worker app that publishes every payout batch and slice message three times (same task id).

Used to prove that duplicated deliveries pay nobody twice: each batch or slice task sent by a
worker (the fan-out after expansion and every self re-enqueue) reaches the broker three times.
"""

import os

import redis
from celery.signals import after_task_publish

from tests.worker_app import app

__all__ = ["app"]

# Literal names: this module is imported before Django is set up, so no model imports here.
DUPLICATED = {
    "payouts.tasks.payout_batch_ledger_task",
    "payouts.tasks.payout_batch_stripe_task",
    "payouts.tasks.payout_job_slice_task",
}
_republishing = False


@after_task_publish.connect
def _publish_twice_more(sender=None, headers=None, body=None, **_) -> None:
    # One flag per worker process: the copies published below must not be copied again.
    global _republishing
    if _republishing or sender not in DUPLICATED:
        return
    args, kwargs, _embed = body
    _republishing = True
    try:
        for _ in range(2):
            app.send_task(sender, args=args, kwargs=kwargs, task_id=headers["id"])
        # The test checks this count to know the duplication really happened.
        redis.Redis.from_url(os.environ["REDIS_URL"]).incrby("duplicated_messages", 2)
    finally:
        _republishing = False
