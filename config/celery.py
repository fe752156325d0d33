"""The Celery application; its configuration lives in ``config.settings`` (``CELERY_*``).

Every task uses ``core.tasks.BaseTask``: one retry policy and one dead-letter queue for all.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("stakehold", task_cls="core.tasks:BaseTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
