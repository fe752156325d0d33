from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self) -> None:
        # Registers this app's tasks in every process (web too, not only workers), so the
        # services can look them up by name without importing the tasks module, which imports
        # them.
        from notifications import tasks  # noqa: F401
