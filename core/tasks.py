"""The base class of every Celery task (set as the app's ``task_cls``).

It owns the retry policy so that tasks stay thin: transient errors (dropped connections,
timeouts, lock timeouts, deadlocks) are retried with exponential backoff and jitter, and a task
that fails for good -- retries exhausted or a permanent error -- leaves a durable DeadLetter row
that staff can replay. It also binds what each run is about (task, queue, job, the request that
sent it) for its log lines and Sentry events.
"""

import inspect
import logging

import redis.exceptions
from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from core.errors import TransientError
from core.logs import log_context_bind
from core.requestid import TASK_HEADER, request_id_get, request_id_reset, request_id_set
from core.retry import backoff_delay
from core.sentry import sentry_tags_set

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    OperationalError,  # includes lock_timeout, deadlock and serialization failures
    InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


# Arguments that say what a run works on.
CONTEXT_ARGUMENTS = ("job_id",)


class BaseTask(Task):
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args, **kwargs):
        # Every log line and Sentry event of this run names the task, its queue, what it works
        # on (``context_tags``) and the request that started it.
        delivery = self.request.delivery_info or {}
        tags = {
            "task_name": self.name,
            "task_id": self.request.id,
            "queue": delivery.get("routing_key") or None,
            **self.context_tags(args, kwargs),
        }
        # The id of the request that sent it; a task run in-process (eagerly) keeps its caller's.
        token = request_id_set(self.request.get(TASK_HEADER) or request_id_get())
        try:
            with log_context_bind(**tags):
                sentry_tags_set(tags)
                return self._run_with_retries(*args, **kwargs)
        finally:
            request_id_reset(token)

    def _run_with_retries(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            countdown = backoff_delay(
                self.request.retries,
                base=settings.TASK_RETRY_BACKOFF_BASE,
                cap=settings.TASK_RETRY_BACKOFF_MAX,
            )
            logger.warning(
                "task %s[%s] transient error, retry %d in %.1fs: %r",
                self.name,
                self.request.id,
                self.request.retries + 1,
                countdown,
                exc,
            )
            # Past max_retries, retry() re-raises exc and the task fails into on_failure.
            raise self.retry(
                exc=exc, countdown=countdown, max_retries=settings.TASK_MAX_RETRIES
            ) from exc

    def context_tags(self, args: tuple, kwargs: dict) -> dict[str, object]:
        """What a run works on, for its logs and Sentry events: the arguments named in
        ``CONTEXT_ARGUMENTS`` (``{"job_id": 7}`` for every payout job task)."""
        try:
            bound = inspect.signature(self.run).bind_partial(*args, **kwargs).arguments
        except TypeError:
            return {}  # arguments that do not fit: the run itself will say so
        return {name: bound[name] for name in CONTEXT_ARGUMENTS if name in bound}

    def dead_letter_subject(self, args: tuple, kwargs: dict) -> str:
        """What a failure is about, for staff searching dead letters; tasks may override."""
        return ""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from core.services import dead_letter_record

        delivery = self.request.delivery_info or {}
        try:
            dead_letter_record(
                task_id=task_id,
                task_name=self.name,
                args=list(args or ()),
                kwargs=dict(kwargs or {}),
                queue=delivery.get("routing_key") or "",
                error=f"{type(exc).__name__}: {exc}",
                traceback=str(einfo),
                attempts=self.request.retries + 1,
                subject=self.dead_letter_subject(tuple(args or ()), dict(kwargs or {})),
            )
        except Exception:
            # The database may be what failed; the broker's own log still has the failure.
            logger.exception("could not record dead letter for %s[%s]", self.name, task_id)
