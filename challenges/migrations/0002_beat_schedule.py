"""The beat schedule, as rows of django-celery-beat's database scheduler (editable in the admin).

Idempotent (get_or_create by task name): running it on a database where staff already edited a
row keeps their edit. Every task here runs every minute and is safe to run twice at once.
"""

from django.db import migrations
from django.utils import timezone

EVERY_MINUTE_TASKS = {
    "challenges: close expired challenges": "challenges.tasks.challenges_sweep_deadlines_task",
    "challenges: deadline warnings": "challenges.tasks.challenges_send_deadline_warnings_task",
    "payouts: watchdog": "payouts.tasks.payout_watchdog_task",
    "notifications: redeliver stale": "notifications.tasks.notifications_redeliver_stale_task",
}


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    for name, task in EVERY_MINUTE_TASKS.items():
        PeriodicTask.objects.get_or_create(
            task=task,
            defaults={
                "name": name,
                "interval": every_minute,
                # A run that waited a whole interval in the queue is superseded by the next one.
                "expire_seconds": 60,
            },
        )
    # A running beat re-reads its schedule when this marker changes.
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(task__in=EVERY_MINUTE_TASKS.values()).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("challenges", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
