from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Operations"

    def ready(self) -> None:
        # Importing these connects their Celery signal receivers (task counters, message
        # stamps, worker heartbeats) in every process: web, workers and beat.
        from core import metrics, queues  # noqa: F401

        metrics.scrape_collector_register(metrics.SharedMetricsCollector())
        metrics.scrape_collector_register(metrics.OperationsCollector())
