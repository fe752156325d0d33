"""Challenges in the Django admin: read-only views of state that only services may change.

Creating a challenge opens an escrow account and staking moves money, so neither is offered
here; resolution and cancellation are payouts' services, which ``payouts/admin.py`` adds to this
page (it registers a subclass of ``ChallengeAdmin``).
"""

from django.contrib import admin
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html

from challenges.models import Challenge, Stake
from core.admin import ReadOnlyAdminMixin

STAKE_INLINE_LIMIT = 50


class FirstStakesFormSet(BaseInlineFormSet):
    """Only the first stakes: a challenge may have 100,000 of them (the full list is linked)."""

    def get_queryset(self):
        if not hasattr(self, "_first_stakes"):
            self._first_stakes = super().get_queryset()[:STAKE_INLINE_LIMIT]
        return self._first_stakes


class StakeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Stake
    formset = FirstStakesFormSet
    fields = ["id", "user", "side", "amount", "created_at"]
    readonly_fields = fields
    ordering = ["id"]
    extra = 0
    verbose_name_plural = f"stakes (first {STAKE_INLINE_LIMIT})"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user")


@admin.register(Challenge)
class ChallengeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
    list_filter = ["status", ("due_date", admin.DateFieldListFilter), "category"]
    search_fields = ["=id", "title", "challenger__username", "challenged__username"]
    date_hierarchy = "due_date"
    list_select_related = ["challenger", "challenged"]
    show_full_result_count = False
    inlines = [StakeInline]
    fieldsets = [
        (None, {"fields": ["title", "description", "category", "challenger", "challenged"]}),
        ("State", {"fields": ["status", "result", "due_date", "resolved_at", "resolved_by"]}),
        (
            "Totals",
            {"fields": [("yes_total", "yes_count"), ("no_total", "no_count"), "escrow", "stakes"]},
        ),
        ("Times", {"fields": ["created_at", "updated_at", "completed_at"]}),
    ]

    @admin.display(description="all stakes")
    def stakes(self, challenge: Challenge) -> str:
        url = reverse("admin:challenges_stake_changelist") + f"?challenge__id__exact={challenge.pk}"
        count = challenge.yes_count + challenge.no_count
        return format_html('<a href="{}">{} stakes</a>', url, count)


@admin.register(Stake)
class StakeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "challenge", "user", "side", "amount", "created_at"]
    list_filter = ["side"]
    search_fields = ["=challenge__id", "user__username"]
    list_select_related = ["challenge", "user"]
    raw_id_fields = ["challenge", "user"]
    show_full_result_count = False
