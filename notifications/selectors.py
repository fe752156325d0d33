"""Reads shared by the notifications API and admin."""

from typing import Any

from django.db.models import QuerySet

from notifications.models import Notification


def notification_list(*, user: Any, unread: bool = False) -> QuerySet[Notification]:
    """The user's own notifications, newest first (served by ``notification_user_idx``)."""
    notifications = Notification.objects.filter(user=user).order_by("-id")
    return notifications.filter(read_at__isnull=True) if unread else notifications
