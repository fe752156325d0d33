"""Payouts in the Django admin: resolution and cancellation on the challenge page, payout jobs
with live progress and their controls, and payout entries.

Nothing here writes a model: every action calls the same service as the REST API, so the
audit trail and the state checks are the same wherever staff act.
"""

from django.contrib import admin
from django.utils.html import format_html

from challenges.admin import ChallengeAdmin
from challenges.models import Challenge
from core.admin import ReadOnlyAdmin, service_action
from payouts.models import PayoutEntry, PayoutJob
from payouts.selectors import payout_job_progress
from payouts.services.jobs import (
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
)

# Resolving and cancelling are this app's services, so this app adds them to the challenge
# admin (challenges, a lower layer, knows nothing of payouts).
CHALLENGE_ACTIONS = [
    service_action(
        "resolve_challenger_won",
        challenge_resolve,
        "Resolve: challenger won",
        id_arg="challenge_id",
        result="challenger_won",
    ),
    service_action(
        "resolve_challenged_won",
        challenge_resolve,
        "Resolve: challenged won",
        id_arg="challenge_id",
        result="challenged_won",
    ),
    service_action(
        "resolve_draw",
        challenge_resolve,
        "Resolve: draw (refund everyone)",
        id_arg="challenge_id",
        result="draw",
    ),
    service_action(
        "cancel_and_refund",
        challenge_cancel,
        "Cancel and refund every stake",
        id_arg="challenge_id",
    ),
]


admin.site.unregister(Challenge)


@admin.register(Challenge)
class ChallengeWithPayoutsAdmin(ChallengeAdmin):
    actions = CHALLENGE_ACTIONS


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
        service_action("pause", payout_job_pause, "Pause the selected jobs", id_arg="job_id"),
        service_action("resume", payout_job_resume, "Resume the selected jobs", id_arg="job_id"),
        service_action("cancel", payout_job_cancel, "Cancel the selected jobs", id_arg="job_id"),
        service_action(
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
