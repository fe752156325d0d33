from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class DeadLetter(models.Model):
    """A task that failed for good: kept durably so staff can inspect and replay it.

    One row per Celery task id (a task that fails again after a replay is a new task id and so
    a new row); ``status`` moves from ``open`` to ``replayed`` exactly once.
    """

    class Status(models.TextChoices):
        OPEN = "open"
        REPLAYED = "replayed"

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255, db_index=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    queue = models.CharField(max_length=64, blank=True)
    error = models.TextField()
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField()
    # What the failure was about, when a task names it (for example "payout_entry:42").
    subject = models.CharField(max_length=255, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(db_default=Now())
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    replay_task_id = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "-id"], name="deadletter_status_idx")]
        permissions = [("replay_deadletter", "Can replay a dead-lettered task")]

    def __str__(self) -> str:
        return f"{self.task_name} [{self.task_id}] {self.status}"


class AuditEntry(models.Model):
    """An append-only record of a staff action: who did what to which object, and when."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target_idx")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} {self.target_type}:{self.target_id}"
