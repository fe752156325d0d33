"""Operations in the admin: the dead-letter queue (with replay) and the audit trail; and what
every app's admin shares: read-only model admins and actions that call a service per row.

The dead letters and the audit trail are read-only here: dead letters change only through the
replay service, and audit entries never change.
"""

from collections.abc import Callable
from functools import cached_property

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet

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


# Below this many rows a count(*) is cheap enough to be exact; above, it reads every row on
# every page (about 30 ms a million here, on both cores).
ESTIMATED_COUNT_FROM = 100_000


def _planner_rows(queryset: QuerySet) -> int:
    """The planner's row count of the queryset's table (``pg_class.reltuples``, kept current
    by autovacuum and ANALYZE; 0 before the table was first analyzed)."""
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row else 0


class EstimatedCountPaginator(Paginator):
    """A changelist paginator for tables that grow with the platform's history: the unfiltered
    list of a big table takes its count from the planner's estimate instead of a count(*) that
    reads every row on each page view; a filtered or searched list, or a small table, is
    counted exactly. ``estimated`` makes the pagination line say "about"
    (config/templates/admin/pagination.html)."""

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            rows = _planner_rows(queryset)
            if rows >= ESTIMATED_COUNT_FROM:
                self.estimated = True
                return rows
        return super().count


class LargeTableAdminMixin:
    """For the admins of tables that grow to millions of rows: no count of the whole table on
    every page (``show_full_result_count``), the list's own count estimated while nothing
    filters it, and no per-filter counts (Django's "Show counts" facets, one pass over the
    whole list on every page view while they are on)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER


class ReadOnlyAdmin(
    LargeTableAdminMixin, ReadOnlyAdminMixin, ServiceActionsAdminMixin, admin.ModelAdmin
):
    """Rows that only services write: the ones that grow to millions."""


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
