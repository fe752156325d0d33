"""Celery app for test worker processes: the project's app plus the tasks only tests use."""

from config.celery import app
from tests import tasks_for_tests  # noqa: F401 - registers the test tasks

__all__ = ["app"]
