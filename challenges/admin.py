"""Challenges in the Django admin: read-only views of state that only services may change.

The challenge page is the staff console's view of one challenge: its parties, state and due
date, per-side totals, the evidence and notes, its stakers a page at a time (never all of a
million), and its audit history. Creating a challenge opens an escrow account and staking
moves money, so neither is offered here; the only edit is the evidence and the staff notes,
through their service on a page of their own. Resolution and cancellation are payouts'
services, which ``payouts/admin.py`` adds to this page (it registers a subclass of
``ChallengeAdmin``, which fills ``console_buttons`` and ``audit_targets``).
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from challenges.models import Challenge, Stake
from challenges.services import challenge_notes_update
from core.admin import LargeTableAdminMixin, ReadOnlyAdminMixin
from core.errors import DomainError
from core.models import AuditEntry
from core.permissions import staff_action_check

STAKES_PAGE_SIZE = 50
AUDIT_SHOWN = 30


class NotesForm(forms.Form):
    evidence = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        required=False,
        help_text="Text and/or links the parties (or staff) offer as proof of the outcome.",
    )
    admin_notes = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        required=False,
        help_text="Staff only: never shown to users.",
    )


@admin.register(Challenge)
class ChallengeAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "title",
        "status",
        "due_date",
        "challenger",
        "challenged",
        "yes_total",
        "yes_count",
        "no_total",
        "no_count",
    ]
    # No date hierarchy and no filter offering every category: each reads every challenge on
    # each page view (a DISTINCT over the table) to draw its links. The due-date filter needs
    # no query, and categories are searched.
    list_filter = ["status", ("due_date", admin.DateFieldListFilter)]
    search_fields = ["=id", "title", "category", "challenger__username", "challenged__username"]
    list_select_related = ["challenger", "challenged"]
    fieldsets = [
        (None, {"fields": ["title", "description", "category", "challenger", "challenged"]}),
        ("State", {"fields": ["status", "result", "due_date", "resolved_at", "resolved_by"]}),
        (
            "Totals",
            {"fields": [("yes_total", "yes_count"), ("no_total", "no_count"), "escrow", "stakes"]},
        ),
        ("Evidence and notes", {"fields": ["evidence", "admin_notes", "resolution_note"]}),
        ("Times", {"fields": ["created_at", "updated_at", "completed_at"]}),
    ]

    @admin.display(description="all stakes")
    def stakes(self, challenge: Challenge) -> str:
        url = reverse("admin:challenges_stake_changelist") + f"?challenge__id__exact={challenge.pk}"
        count = challenge.yes_count + challenge.no_count
        return format_html('<a href="{}">{} stakes</a>', url, count)

    def get_urls(self):
        notes = path(
            "<int:challenge_id>/notes/",
            self.admin_site.admin_view(self.notes_view),
            name="challenges_challenge_notes",
        )
        return [notes, *super().get_urls()]

    # Hooks for subclasses (payouts/admin.py): buttons on the page, and the audit targets that
    # belong to this challenge besides itself (its payout job).
    def console_buttons(self, challenge: Challenge) -> list[tuple[str, str]]:
        url = reverse("admin:challenges_challenge_notes", args=[challenge.pk])
        return [("Edit evidence and notes…", url)]

    def audit_targets(self, challenge: Challenge) -> list[tuple[str, str]]:
        return [("challenge", str(challenge.pk))]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        challenge = self.get_object(request, object_id)
        extra = extra_context or {}
        if challenge is not None:
            extra = {
                "console_buttons": self.console_buttons(challenge),
                "stakers": self._stakers_page(request, challenge),
                "audit": self._audit(challenge),
                **extra,
            }
        return super().change_view(request, object_id, form_url, extra)

    def _stakers_page(self, request, challenge: Challenge) -> dict:
        """One page of stakers by id (keyset: ``?stakes_after=<id>``, as cheap for the last
        page of a million as for the first)."""
        try:
            after = max(int(request.GET.get("stakes_after", 0)), 0)
        except ValueError:
            after = 0
        rows = list(
            Stake.objects.filter(challenge=challenge, id__gt=after)
            .select_related("user")
            .order_by("id")[: STAKES_PAGE_SIZE + 1]
        )
        more = len(rows) > STAKES_PAGE_SIZE
        rows = rows[:STAKES_PAGE_SIZE]
        return {
            "rows": rows,
            "first_page": after == 0,
            "next_after": rows[-1].pk if more else None,
            "total": challenge.yes_count + challenge.no_count,
            "page_size": STAKES_PAGE_SIZE,
        }

    def _audit(self, challenge: Challenge) -> list[AuditEntry]:
        entries = AuditEntry.objects.none()
        for target_type, target_id in self.audit_targets(challenge):
            entries |= AuditEntry.objects.filter(target_type=target_type, target_id=target_id)
        return list(entries.select_related("actor").order_by("-id")[:AUDIT_SHOWN])

    def notes_view(self, request, challenge_id: int):
        """Edit the evidence and the staff notes, through their service (audited)."""
        staff_action_check(user=request.user, action="challenge.notes")
        if not self.has_view_permission(request):
            raise PermissionDenied
        challenge = get_object_or_404(Challenge, pk=challenge_id)
        change_url = reverse("admin:challenges_challenge_change", args=[challenge.pk])
        initial = {"evidence": challenge.evidence, "admin_notes": challenge.admin_notes}
        form = NotesForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                challenge_notes_update(
                    challenge_id=challenge.pk, actor=request.user, **form.cleaned_data
                )
            except DomainError as exc:
                form.add_error(None, exc.detail)
            else:
                self.message_user(request, "Evidence and notes saved.", messages.SUCCESS)
                return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Evidence and notes of challenge #{challenge.pk}",
            "challenge": challenge,
            "form": form,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/challenges/challenge/notes.html", context)


@admin.register(Stake)
class StakeAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "challenge", "user", "side", "amount", "created_at"]
    list_filter = ["side"]
    search_fields = ["=challenge__id", "user__username"]
    list_select_related = ["challenge", "user"]
    raw_id_fields = ["challenge", "user"]
