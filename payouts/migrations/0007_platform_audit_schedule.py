"""The hourly money check (``payouts.tasks.platform_audit_task``) in beat's schedule, as a row
of django-celery-beat's database scheduler (editable in the admin), like the every-minute tasks
of ``challenges/migrations/0002_beat_schedule.py``. Idempotent and reversible."""

from django.db import migrations
from django.utils import timezone

TASK = "payouts.tasks.platform_audit_task"


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        task=TASK,
        defaults={
            "name": "payouts: money check (ledger and payout entries)",
            "interval": hourly,
            # A run that waited a whole hour in the queue is superseded by the next one.
            "expire_seconds": 3600,
        },
    )
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task=TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0006_job_failed_state"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
