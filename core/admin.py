"""Operations in the admin: the dead-letter queue (with replay) and the audit trail.

Both are read-only here: dead letters change only through the replay service, and audit
entries never change.
"""

from django.contrib import admin, messages

from core.errors import DomainError
from core.models import AuditEntry, DeadLetter
from core.services import dead_letter_replay


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "task_name", "subject", "attempts", "status", "created_at", "error")
    list_filter = ("status", "task_name", "queue")
    search_fields = ("task_id", "task_name", "subject", "error")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ["replay"]

    @admin.action(description="Replay the selected dead letters")
    def replay(self, request, queryset):
        replayed = 0
        for letter_id in queryset.values_list("pk", flat=True).order_by("pk"):
            try:
                dead_letter_replay(dead_letter_id=letter_id, actor=request.user)
            except DomainError as exc:
                self.message_user(request, f"#{letter_id}: {exc.detail}", messages.WARNING)
            else:
                replayed += 1
        if replayed:
            self.message_user(request, f"Replayed {replayed} dead letter(s).", messages.SUCCESS)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target_type", "target_id")
    list_filter = ("action", "target_type")
    search_fields = ("target_id", "actor__username", "action")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
