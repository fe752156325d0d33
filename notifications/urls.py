from django.urls import path

from notifications.api import NotificationListApi, NotificationReadApi, PusherAuthApi

urlpatterns = [
    path("notifications/", NotificationListApi.as_view(), name="notifications"),
    path(
        "notifications/<int:notification_id>/read/",
        NotificationReadApi.as_view(),
        name="notification-read",
    ),
    path("pusher/auth", PusherAuthApi.as_view(), name="pusher-auth"),
]
