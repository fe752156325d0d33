"""Payouts in the Django admin: the staff console.

- The challenge page gets "Resolve…" and "Cancel and refund…": confirmation pages that show
  the settlement preview (``settlement_preview``, the very terms and amount SQL the expansion
  pays with), ask for a note, and then call the same services as the REST API. No list action
  moves money: there is no way around the confirmation.
- The payout job page: a live progress bar, rate and ETA (``payouts/job_live.js`` polls the
  job API every 2 s until a final state), counts by entry status and failure reason, the job's
  dead letters, and pause / resume / cancel / retry buttons, each behind a confirmation page.
- The admin index shows the console's dashboard (``payouts.dashboard``).
- Entries filterable by job, status and failure reason; connected accounts.

Nothing here writes a model: every page calls a service, and every staff page asks
``core.permissions`` first, as the API does.
"""

from collections.abc import Callable

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from challenges.admin import ChallengeAdmin
from challenges.models import Challenge
from core.admin import ReadOnlyAdmin, ReadOnlyAdminMixin
from core.errors import DomainError
from core.models import DeadLetter
from core.permissions import staff_action_check
from core.services import dead_letter_replay
from payouts.models import (
    ConnectedAccount,
    PayoutAttempt,
    PayoutEntry,
    PayoutJob,
    entries_in,
)
from payouts.selectors import (
    payout_entry_failure_reasons,
    payout_entry_status_counts,
    payout_job_dead_letters,
    payout_job_progress,
    winners_without_connected_account,
)
from payouts.services.jobs import (
    CANCELLABLE,
    RETRYABLE,
    WINNING_SIDE,
    challenge_cancel,
    challenge_resolve,
    payout_job_cancel,
    payout_job_pause,
    payout_job_resume,
    payout_job_retry_failed,
)
from payouts.services.settlement import settlement_preview

admin.site.index_template = "admin/console_index.html"

OUTCOMES = [
    (Challenge.Result.CHALLENGER_WON, "Challenger won (side yes is paid)"),
    (Challenge.Result.CHALLENGED_WON, "Challenged won (side no is paid)"),
    (Challenge.Result.DRAW, "Draw (every stake refunded)"),
]


class ResolveForm(forms.Form):
    result = forms.ChoiceField(choices=OUTCOMES, widget=forms.RadioSelect)
    rail = forms.ChoiceField(choices=PayoutJob.Rail.choices, initial=PayoutJob.Rail.LEDGER)
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 80}), max_length=5000)


class CancelForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 80}), max_length=5000)


def _job_url(job_id: int) -> str:
    return reverse("admin:payouts_payoutjob_change", args=[job_id])


def _progress_bar(job: PayoutJob) -> str:
    progress = payout_job_progress(job=job)
    return format_html(
        '<progress max="100" value="{}"></progress> {}% <a href="{}">job #{} ({})</a>',
        progress["progress_percent"],
        progress["progress_percent"],
        _job_url(job.pk),
        job.pk,
        job.status,
    )


admin.site.unregister(Challenge)


@admin.register(Challenge)
class ChallengeWithPayoutsAdmin(ChallengeAdmin):
    # Money moves only through the confirmation pages below.
    actions = None
    fieldsets = [
        *ChallengeAdmin.fieldsets[:3],
        ("Payout", {"fields": ["payout"]}),
        *ChallengeAdmin.fieldsets[3:],
    ]

    @admin.display(description="payout job")
    def payout(self, challenge: Challenge) -> str:
        job = PayoutJob.objects.filter(challenge=challenge).first()
        return _progress_bar(job) if job else "none yet"

    def get_urls(self):
        pages = [
            path(
                "<int:challenge_id>/resolve/",
                self.admin_site.admin_view(self.resolve_view),
                name="challenges_challenge_resolve",
            ),
            path(
                "<int:challenge_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="challenges_challenge_cancel",
            ),
        ]
        return [*pages, *super().get_urls()]

    def console_buttons(self, challenge: Challenge) -> list[tuple[str, str]]:
        buttons = []
        if challenge.status == Challenge.Status.PENDING_ADMIN:
            url = reverse("admin:challenges_challenge_resolve", args=[challenge.pk])
            buttons.append(("Resolve…", url))
        if challenge.status in CANCELLABLE:
            url = reverse("admin:challenges_challenge_cancel", args=[challenge.pk])
            buttons.append(("Cancel and refund…", url))
        return [*buttons, *super().console_buttons(challenge)]

    def audit_targets(self, challenge: Challenge) -> list[tuple[str, str]]:
        job_id = PayoutJob.objects.filter(challenge=challenge).values_list("pk", flat=True).first()
        targets = super().audit_targets(challenge)
        return [*targets, ("payout_job", str(job_id))] if job_id else targets

    def _confirm_page(self, request, challenge, *, action, form, extra):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "challenge": challenge,
            "change_url": reverse("admin:challenges_challenge_change", args=[challenge.pk]),
            "form": form,
            "action": action,
            "fee_bps": settings.PLATFORM_FEE_BPS,
            "currency": settings.CURRENCY,
            **extra,
        }
        return TemplateResponse(request, f"admin/payouts/{action}_confirm.html", context)

    def _after_start(self, request, job, verb):
        self.message_user(request, f"Challenge {verb}: payout job #{job.pk} started.")
        return HttpResponseRedirect(_job_url(job.pk))

    def resolve_view(self, request, challenge_id: int):
        """The resolve confirmation: outcome, rail, required note, and the settlement each
        outcome would pay, computed by the code the engine pays with."""
        staff_action_check(user=request.user, action="challenge.resolve")
        challenge = get_object_or_404(
            Challenge.objects.select_related("challenger"), pk=challenge_id
        )
        form = ResolveForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = challenge_resolve(
                    challenge_id=challenge.pk, actor=request.user, **form.cleaned_data
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                return self._after_start(request, job, "resolved")
        fee_bps = settings.PLATFORM_FEE_BPS
        previews = [
            (
                value,
                label,
                settlement_preview(
                    challenge_id=challenge.pk,
                    winning_side=WINNING_SIDE.get(value),
                    fee_bps=fee_bps,
                ),
            )
            for value, label in OUTCOMES
        ]
        unconnected = {
            value: winners_without_connected_account(challenge_id=challenge.pk, side=side)
            for value, side in WINNING_SIDE.items()
        }
        stripe_reason = (
            "" if settings.STRIPE_API_KEY else "Stripe is not configured (STRIPE_API_KEY)."
        )
        extra = {
            "title": f"Resolve challenge #{challenge.pk}",
            "previews": previews,
            "unconnected": unconnected,
            "stripe_reason": stripe_reason,
            "can_act": challenge.status == Challenge.Status.PENDING_ADMIN,
        }
        return self._confirm_page(request, challenge, action="resolve", form=form, extra=extra)

    def cancel_view(self, request, challenge_id: int):
        """The cancel confirmation: every stake refunded in full, a required note."""
        staff_action_check(user=request.user, action="challenge.cancel")
        challenge = get_object_or_404(Challenge, pk=challenge_id)
        form = CancelForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = challenge_cancel(
                    challenge_id=challenge.pk, actor=request.user, **form.cleaned_data
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                return self._after_start(request, job, "cancelled")
        preview = settlement_preview(challenge_id=challenge.pk, winning_side=None, fee_bps=0)
        extra = {
            "title": f"Cancel challenge #{challenge.pk} and refund every stake",
            "preview": preview,
            "can_act": challenge.status in CANCELLABLE,
        }
        return self._confirm_page(request, challenge, action="cancel", form=form, extra=extra)


# Each job control: its service, the states it applies to, and what the confirmation says.
JOB_CONTROLS: dict[str, tuple[Callable, tuple[str, ...], str]] = {
    "pause": (
        payout_job_pause,
        (PayoutJob.Status.RUNNING,),
        "No batch commits after the pause; batches in flight roll back. Resume continues "
        "where it stopped.",
    ),
    "resume": (
        payout_job_resume,
        (PayoutJob.Status.PAUSED,),
        "The job runs again and gets fresh batches.",
    ),
    "cancel": (
        payout_job_cancel,
        PayoutJob.ACTIVE_STATUSES,
        "Every entry not paid yet is cancelled and will never be paid by this job; its money "
        "stays in the challenge's escrow. This cannot be undone.",
    ),
    "retry-failed": (
        payout_job_retry_failed,
        RETRYABLE,
        "Every failed entry gets a fresh start; a failed job runs and finalizes again (fix "
        "its error first).",
    ),
}


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
        "finished_at",
    ]
    list_filter = ["status", "kind", "rail", ("finished_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "=challenge__id"]
    list_select_related = ["challenge"]
    # Job controls are buttons on the job page, each behind a confirmation.
    actions = None

    @admin.display(description="progress")
    def progress(self, job: PayoutJob) -> str:
        percent = payout_job_progress(job=job)["progress_percent"]
        return format_html('<progress max="100" value="{}"></progress> {}%', percent, percent)

    def get_urls(self):
        pages = [
            path(
                "<int:job_id>/control/<str:control>/",
                self.admin_site.admin_view(self.control_view),
                name="payouts_payoutjob_control",
            ),
            path(
                "<int:job_id>/dead-letters/<int:dead_letter_id>/replay/",
                self.admin_site.admin_view(self.replay_view),
                name="payouts_payoutjob_replay",
            ),
        ]
        return [*pages, *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The job page: live progress, counts, failure reasons, dead letters, controls."""
        job = self.get_object(request, object_id)
        extra = extra_context or {}
        if job is not None:
            entries_url = reverse("admin:payouts_payoutentry_changelist") + f"?job={job.pk}"
            extra = {
                "progress": payout_job_progress(job=job),
                "status_counts": payout_entry_status_counts(job=job),
                "failure_reasons": payout_job_failure_rows(job.pk),
                "dead_letters": payout_job_dead_letters(job_id=job.pk),
                "entries_url": entries_url,
                "controls": [
                    (
                        name,
                        name.replace("-", " ").capitalize(),
                        reverse("admin:payouts_payoutjob_control", args=[job.pk, name]),
                        states,
                    )
                    for name, (_, states, _) in JOB_CONTROLS.items()
                ],
                "pusher": _pusher_settings(),
                **extra,
            }
        return super().change_view(request, object_id, form_url, extra)

    def _confirm(self, request, job, *, title, explanation, perform):
        """Django's ``delete_selected`` pattern: a page that says what will happen, and a POST
        with ``confirm`` that does it through the service and returns to the job page."""
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            try:
                message = perform()
            except DomainError as exc:
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                self.message_user(request, message, messages.SUCCESS)
            return HttpResponseRedirect(_job_url(job.pk))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "job": job,
            "progress": payout_job_progress(job=job),
            "explanation": explanation,
            "job_url": _job_url(job.pk),
        }
        return TemplateResponse(request, "admin/payouts/payoutjob/confirm.html", context)

    def control_view(self, request, job_id: int, control: str):
        if control not in JOB_CONTROLS:
            return HttpResponseRedirect(_job_url(job_id))
        staff_action_check(user=request.user, action=f"payout_job.{control}")
        job = get_object_or_404(PayoutJob, pk=job_id)
        service, _, explanation = JOB_CONTROLS[control]
        verb = control.replace("-", " ")

        def perform() -> str:
            done = service(job_id=job.pk, actor=request.user)
            return f"Job #{done.pk}: {verb} done; it is now {done.status}."

        return self._confirm(
            request,
            job,
            title=f"{verb.capitalize()} payout job #{job.pk}?",
            explanation=explanation,
            perform=perform,
        )

    def replay_view(self, request, job_id: int, dead_letter_id: int):
        staff_action_check(user=request.user, action="dead_letter.replay")
        job = get_object_or_404(PayoutJob, pk=job_id)
        letter = get_object_or_404(DeadLetter, pk=dead_letter_id)

        def perform() -> str:
            replayed = dead_letter_replay(dead_letter_id=letter.pk, actor=request.user)
            return f"Dead letter #{replayed.pk} replayed as task {replayed.replay_task_id}."

        explanation = (
            f"The task {letter.task_name} runs again with its original arguments "
            f"{letter.args} (it failed with: {Truncator(letter.error).chars(200)})."
        )
        return self._confirm(
            request,
            job,
            title=f"Replay dead letter #{letter.pk}?",
            explanation=explanation,
            perform=perform,
        )


def payout_job_failure_rows(job_id: int) -> list[tuple[str, object, str]]:
    """Failure reasons with their counts and the filtered entry list behind each."""
    base = reverse("admin:payouts_payoutentry_changelist")
    return [
        (reason, count, f"{base}?job={job_id}&failure_reason={reason}")
        for reason, count in payout_entry_failure_reasons(job_id=job_id)
    ]


def _pusher_settings() -> dict | None:
    """What the job page's script needs to follow ``private-staff`` live, when configured."""
    if not (settings.PUSHER_APP_ID and settings.PUSHER_KEY and settings.PUSHER_SECRET):
        return None
    host = settings.PUSHER_HOST or f"ws-{settings.PUSHER_CLUSTER}.pusher.com"
    scheme = "wss" if settings.PUSHER_SSL else "ws"
    port = f":{settings.PUSHER_PORT}" if settings.PUSHER_PORT else ""
    return {
        "url": f"{scheme}://{host}{port}/app/{settings.PUSHER_KEY}?protocol=7&client=js&version=8"
    }


class JobFilter(admin.SimpleListFilter):
    """Entries of one job: the ten newest jobs to pick from, and any job by ``?job=<id>``."""

    title = "job"
    parameter_name = "job"

    def lookups(self, request, model_admin):
        jobs = list(PayoutJob.objects.order_by("-id").values_list("pk", "challenge_id")[:10])
        chosen = self.value()
        if chosen and chosen.isdigit() and int(chosen) not in {pk for pk, _ in jobs}:
            jobs.insert(0, (int(chosen), None))
        return [(str(pk), f"#{pk}" + (f" (challenge {c})" if c else "")) for pk, c in jobs]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(job_id=int(value)) if value and value.isdigit() else queryset


class EntryStatusFilter(admin.SimpleListFilter):
    """By status; a status few entries have is found through the index of its own column
    (``entries_in``): no index holds the status itself."""

    title = "status"
    # The field filter's parameter, which links across the console already use.
    parameter_name = "status__exact"

    def lookups(self, request, model_admin):
        return PayoutEntry.Status.choices

    def queryset(self, request, queryset):
        status = self.value()
        if status not in PayoutEntry.Status.values:
            return queryset
        return queryset.filter(entries_in(status))


class FailureReasonFilter(admin.SimpleListFilter):
    """By failure reason, offering the reasons of the chosen job (a bounded query), or the
    reason given in the address."""

    title = "failure reason"
    parameter_name = "failure_reason"

    def lookups(self, request, model_admin):
        job = request.GET.get("job", "")
        reasons = (
            [reason for reason, _ in payout_entry_failure_reasons(job_id=int(job))]
            if job.isdigit()
            else []
        )
        chosen = self.value()
        if chosen and chosen not in reasons:
            reasons.insert(0, chosen)
        return [(reason, reason) for reason in reasons]

    def queryset(self, request, queryset):
        return queryset.filter(failure_reason=self.value()) if self.value() else queryset


class PayoutAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every call to Stripe about the entry, oldest first: what each one answered."""

    model = PayoutAttempt
    extra = 0
    can_delete = False
    fields = [
        "attempt",
        "started_at",
        "finished_at",
        "duration_ms",
        "outcome",
        "error_code",
        "http_status",
        "stripe_request_id",
        "transfer_id",
    ]
    readonly_fields = fields


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
        "short_error",
        "completed_at",
    ]
    list_filter = [JobFilter, EntryStatusFilter, FailureReasonFilter]
    search_fields = ["=job__id", "=user__username"]
    list_select_related = ["user"]
    raw_id_fields = ["job", "user"]
    inlines = [PayoutAttemptInline]

    @admin.display(description="last error")
    def short_error(self, entry: PayoutEntry) -> str:
        return Truncator(entry.last_error).chars(120)


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "stripe_account_id", "payouts_enabled", "updated_at"]
    list_filter = ["payouts_enabled"]
    search_fields = ["user__username", "=user__id", "=stripe_account_id"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
