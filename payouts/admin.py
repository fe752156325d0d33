"""Payouts in the Django admin: the ledger (read-only), payout jobs with live progress and
their controls, and payout entries.

Nothing here writes a model: every action calls the same service as the REST API, so the
audit trail and the state checks are the same wherever staff act.
"""

from collections.abc import Callable

from django.contrib import admin, messages
from django.utils.html import format_html

from core.errors import DomainError
from payouts.models import Account, PayoutEntry, PayoutJob, Transfer
from payouts.selectors import payout_job_progress
from payouts.services.jobs import (
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    # Tables with a million rows: no full count on every page.
    show_full_result_count = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _action(name: str, service: Callable, description: str, *, id_arg: str, **kwargs):
    """An admin action calling ``service`` for each selected row, in id order, reporting
    successes and each refusal (a domain error) to the user."""

    def action(modeladmin, request, queryset):
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
    return admin.action(description=description)(action)


# Offered on ChallengeAdmin (challenges/admin.py): resolution and cancellation by staff.
CHALLENGE_ACTIONS = [
    _action(
        "resolve_challenger_won",
        challenge_resolve,
        "Resolve: challenger won",
        id_arg="challenge_id",
        result="challenger_won",
    ),
    _action(
        "resolve_challenged_won",
        challenge_resolve,
        "Resolve: challenged won",
        id_arg="challenge_id",
        result="challenged_won",
    ),
    _action(
        "resolve_draw",
        challenge_resolve,
        "Resolve: draw (refund everyone)",
        id_arg="challenge_id",
        result="draw",
    ),
    _action(
        "cancel_and_refund",
        challenge_cancel,
        "Cancel and refund every stake",
        id_arg="challenge_id",
    ),
]


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "user", "currency", "balance", "created_at"]
    list_filter = ["kind", "currency"]
    search_fields = ["=id", "user__username"]
    list_select_related = ["user"]


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "amount",
        "debit_account",
        "credit_account",
        "idempotency_key",
        "created_at",
    ]
    list_filter = ["kind"]
    search_fields = ["=idempotency_key", "=debit_account__id", "=credit_account__id"]
    list_select_related = ["debit_account", "credit_account"]


@admin.register(PayoutJob)
class PayoutJobAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "challenge",
        "kind",
        "rail",
        "status",
        "progress",
        "completed_count",
        "failed_count",
        "cancelled_count",
        "total_entries",
        "paid_amount",
        "fee_amount",
        "created_at",
    ]
    list_filter = ["status", "kind", "rail"]
    search_fields = ["=id", "=challenge__id"]
    list_select_related = ["challenge"]
    readonly_fields = ["progress"]
    actions = [
        _action("pause", payout_job_pause, "Pause the selected jobs", id_arg="job_id"),
        _action("resume", payout_job_resume, "Resume the selected jobs", id_arg="job_id"),
        _action("cancel", payout_job_cancel, "Cancel the selected jobs", id_arg="job_id"),
        _action(
            "retry_failed", payout_job_retry_failed, "Retry the failed entries", id_arg="job_id"
        ),
    ]

    @admin.display(description="progress")
    def progress(self, job: PayoutJob) -> str:
        percent = payout_job_progress(job=job)["progress_percent"]
        return format_html('<progress max="100" value="{}"></progress> {}%', percent, percent)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The detail page: a progress bar the template refreshes every 2 seconds."""
        job = self.get_object(request, object_id)
        extra = {"progress": payout_job_progress(job=job)} if job else {}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})


@admin.register(PayoutEntry)
class PayoutEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "job",
        "user",
        "stake_amount",
        "amount",
        "status",
        "attempt_count",
        "failure_reason",
        "completed_at",
    ]
    list_filter = ["status", "failure_reason"]
    search_fields = ["=job__id", "=user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["job", "user"]
