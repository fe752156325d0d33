"""The Celery app of benchmark workers: the project's app plus the task-per-payout baseline."""

from config.celery import app


# The name is ``proof.baselines.ENTRY_PAY_ALONE_TASK``; spelled out because this module loads
# before Django's app registry is ready, so it imports the baselines (models) only when run.
@app.task(name="proof.entry_pay_alone", time_limit=60, soft_time_limit=50)
def entry_pay_alone_task(entry_id: int) -> bool:
    from proof.baselines import entry_pay_alone

    return entry_pay_alone(entry_id=int(entry_id))


__all__ = ["app"]
