"""Beat schedule rows for operations: the alerts every minute, the retention every night.

Like ``challenges/migrations/0002_beat_schedule.py``: idempotent (get_or_create by task name,
so an edit staff made in the admin stays) and reversible.
"""

from django.db import migrations
from django.utils import timezone

ALERTS = ("operations: alerts", "payouts.tasks.ops_alerts_check_task")
RETENTION = ("operations: retention", "payouts.tasks.retention_run_task")


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        task=ALERTS[1],
        defaults={"name": ALERTS[0], "interval": every_minute, "expire_seconds": 60},
    )
    # 03:30 UTC, a quiet hour; a run that waited in the queue for an hour is skipped.
    nightly, _ = CrontabSchedule.objects.get_or_create(
        minute="30",
        hour="3",
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        task=RETENTION[1],
        defaults={"name": RETENTION[0], "crontab": nightly, "expire_seconds": 3600},
    )
    # A running beat re-reads its schedule when this marker changes.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task__in=[ALERTS[1], RETENTION[1]]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0008_attempts_onboarding_reversals"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
