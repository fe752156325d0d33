"""Operations in the admin: the dead-letter queue (with replay) and the audit trail; and what
every app's admin shares: read-only model admins and actions that call a service per row.

The dead letters and the audit trail are read-only here: dead letters change only through the
replay service, and audit entries never change.
"""

from collections.abc import Callable

from django.contrib import admin, messages

from core.errors import DomainError
from core.models import AuditEntry, DeadLetter
from core.permissions import staff_action_allowed
from core.services import dead_letter_replay


class ReadOnlyAdminMixin:
    """No add, change or delete in the admin: for model and inline admins of rows that only
    services write."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def service_action(
    name: str,
    service: Callable,
    description: str,
    *,
    id_arg: str,
    staff_action: str,
    **kwargs,
):
    """An admin action calling ``service`` for each selected row, in id order, reporting
    successes and each refusal (a domain error) to the user.

    It is the staff action ``staff_action`` (``core.permissions``, the same name the API view
    uses): admins deriving from ``ServiceActionsAdminMixin`` offer it only to users allowed to
    take it, and the action itself refuses anyone else.
    """

    def action(modeladmin, request, queryset):
        if not staff_action_allowed(user=request.user, action=staff_action):
            modeladmin.message_user(
                request, f"You may not take the action {staff_action}.", messages.ERROR
            )
            return
        done = 0
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                service(actor=request.user, **{id_arg: pk}, **kwargs)
            except DomainError as exc:
                modeladmin.message_user(request, f"#{pk}: {exc.detail}", messages.WARNING)
            else:
                done += 1
        if done:
            modeladmin.message_user(request, f"{description}: {done} done.", messages.SUCCESS)

    action.__name__ = name
    action.staff_action = staff_action
    return admin.action(description=description)(action)


class ServiceActionsAdminMixin:
    """Offer each action only to users allowed to take its ``staff_action`` (Django validates
    a posted action against this list, so an action left out cannot be run)."""

    def get_actions(self, request):
        def allowed(func) -> bool:
            action = getattr(func, "staff_action", None)
            return action is None or staff_action_allowed(user=request.user, action=action)

        return {
            name: entry for name, entry in super().get_actions(request).items() if allowed(entry[0])
        }


class ReadOnlyAdmin(ReadOnlyAdminMixin, ServiceActionsAdminMixin, admin.ModelAdmin):
    # Rows that only services write are the ones that grow to millions: no full count on
    # every page.
    show_full_result_count = False


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "task_name", "subject", "attempts", "status", "created_at", "error")
    list_filter = ("status", "task_name", "queue")
    search_fields = ("task_id", "task_name", "subject", "error")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = [
        service_action(
            "replay",
            dead_letter_replay,
            "Replay the selected dead letters",
            id_arg="dead_letter_id",
            staff_action="dead_letter.replay",
        )
    ]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target_type", "target_id")
    list_filter = ("action", "target_type")
    search_fields = ("target_id", "actor__username", "action")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
