import pytest
from django_celery_beat.models import PeriodicTask

from config.celery import app

pytestmark = pytest.mark.django_db


def test_the_data_migration_schedules_the_lifecycle_tasks_every_minute():
    tasks = {t.task: t for t in PeriodicTask.objects.select_related("interval")}

    for name in (
        "challenges.tasks.challenges_sweep_deadlines_task",
        "challenges.tasks.challenges_send_deadline_warnings_task",
        "payouts.tasks.payout_watchdog_task",
        "notifications.tasks.notifications_redeliver_stale_task",
    ):
        task = tasks[name]
        assert task.enabled
        assert (task.interval.every, task.interval.period) == (1, "minutes")
        assert task.expire_seconds == 60


def test_lifecycle_tasks_are_registered_and_routed_to_their_queues():
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    router = app.amqp.router
    for name, queue in (
        ("challenges.tasks.challenges_sweep_deadlines_task", "scheduler"),
        ("challenges.tasks.challenges_send_deadline_warnings_task", "scheduler"),
        ("notifications.tasks.notifications_deliver_task", "notifications"),
        ("notifications.tasks.notifications_deliver_fan_out_task", "notifications"),
        ("notifications.tasks.staff_event_publish_task", "notifications"),
        ("notifications.tasks.notifications_redeliver_stale_task", "notifications"),
    ):
        assert name in app.tasks
        assert router.route({}, name)["queue"].name == queue


def test_the_database_scheduler_that_beat_runs_loads_the_schedule():
    from django_celery_beat.schedulers import DatabaseScheduler

    schedule = DatabaseScheduler(app=app, lazy=True).all_as_schedule()

    tasks = {entry.task: entry for entry in schedule.values()}
    sweep = tasks["challenges.tasks.challenges_sweep_deadlines_task"]
    assert sweep.schedule.run_every.total_seconds() == 60
    assert "challenges.tasks.challenges_send_deadline_warnings_task" in tasks
