from django.contrib import admin, messages

from core.admin import LargeTableAdminMixin, ReadOnlyAdminMixin
from core.permissions import staff_action_allowed
from notifications.models import Notification
from notifications.services import notifications_deliver_enqueue


class DeliveredFilter(admin.SimpleListFilter):
    title = "delivered"
    parameter_name = "delivered"

    def lookups(self, request, model_admin):
        return [("yes", "Delivered"), ("no", "Not delivered")]

    def queryset(self, request, queryset):
        if self.value() in {"yes", "no"}:
            return queryset.filter(delivered_at__isnull=self.value() == "no")
        return queryset


@admin.register(Notification)
class NotificationAdmin(LargeTableAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "user", "kind", "priority", "challenge", "created_at", "delivered_at"]
    list_filter = ["kind", "priority", DeliveredFilter]
    search_fields = ["=id", "user__username", "dedup_key", "=challenge__id"]
    list_select_related = ["user", "challenge"]
    actions = ["deliver_again"]

    # Resending is an operator's job: a staff action of its own, as every admin action.
    def has_deliver_permission(self, request) -> bool:
        return staff_action_allowed(user=request.user, action="notification.deliver")

    @admin.action(
        description="Deliver the selected undelivered notifications now", permissions=["deliver"]
    )
    def deliver_again(self, request, queryset):
        ids = list(queryset.filter(delivered_at__isnull=True).values_list("id", flat=True))
        tasks = notifications_deliver_enqueue(notification_ids=ids)
        self.message_user(
            request, f"Queued {len(ids)} notifications in {tasks} tasks.", messages.SUCCESS
        )
