"""Settings: one module, everything from the environment (12-factor).

Every value is read through the single ``env`` object. Development defaults exist only for
things that are not secrets; with ``DEBUG`` off the process refuses to start without
``DJANGO_SECRET_KEY``. ``DATABASE_URL`` and ``REDIS_URL`` point at real servers in production;
``deploy/devstack.py`` exports URLs of embedded servers for development and tests.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from core.logs import logging_config
from core.sentry import release_default, sentry_init

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DEBUG is off")
    SECRET_KEY = "insecure-development-key"  # noqa: S105 - only reachable with DEBUG on
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# HTTPS in production (what `manage.py check --deploy` asks for): cookies only over HTTPS, and
# HSTS, which Django sends on requests it knows came over HTTPS. `make up` serves plain HTTP on
# loopback and turns the cookie flags off.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [
    # HSTS for every subdomain, and the browsers' preload list, bind the operator's whole
    # domain for months: the operator opts in with the two settings above.
    "security.W005",
    "security.W021",
    # SECURE_SSL_REDIRECT: TLS ends at the load balancer or reverse proxy, which redirects plain
    # HTTP itself; behind it Django is reached over plain HTTP (by that proxy and by health
    # checks), so a redirect here would send every health check to a port without TLS.
    "security.W008",
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_beat",
    "django_prometheus",
    # The project's apps, bottom layer first (see "Code layout" in the README): each may
    # import the ones above it in this list, never one below.
    "core",
    "ledger",
    "users",
    "notifications",
    "challenges",
    "payouts",
    "proof",
]

MIDDLEWARE = [
    # First: the request id exists before anything logs, and the HTTP metrics time it all.
    "core.requestid.RequestIdMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Transactions are explicit in services (ATOMIC_REQUESTS stays off): money-moving services open
# their own durable transactions so no caller can hold row locks across a network call.
DATABASES = {"default": env.db("DATABASE_URL", default="postgres://localhost/stakehold")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Stakehold API",
    "DESCRIPTION": "Challenges, escrowed stakes, notifications and batched payouts.",
    "VERSION": "0.1.0",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Money ----------------------------------------------------------------------------------
CURRENCY = env.str("CURRENCY", default="coin")
# Platform fee on the losing pool, in basis points; copied onto each payout job when it is
# created so a later change never alters a settled job.
PLATFORM_FEE_BPS = env.int("PLATFORM_FEE_BPS", default=500)
if not 0 <= PLATFORM_FEE_BPS <= 10_000:
    raise ImproperlyConfigured("PLATFORM_FEE_BPS must be between 0 and 10000")
PAYOUT_DEFAULT_RAIL = env.str("PAYOUT_DEFAULT_RAIL", default="ledger")
PAYOUT_BATCH_SIZE = env.int("PAYOUT_BATCH_SIZE", default=10_000)
PAYOUT_PARALLELISM = env.int("PAYOUT_PARALLELISM", default=2)
# Stakes per expansion slice: a job's entries are created slice by slice, and each slice is
# paid while the next one is being created.
PAYOUT_EXPAND_CHUNK = env.int("PAYOUT_EXPAND_CHUNK", default=100_000)

# --- Redis and Celery -----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
# Crash safety: a message is acknowledged only after its task finished, and a task whose
# worker died is handed back to the broker, so any worker may die at any line.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
# Redis re-delivers an unacknowledged message after this long, so it must exceed every task's
# hard time limit plus its longest retry countdown.
# kombu sweeps for expired unacknowledged messages every interval * throttle seconds; tests
# with a short visibility timeout shorten the sweep too.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "payouts.tasks.payout_batch_stripe_task": {"queue": "payouts_stripe"},
    "payouts.tasks.payout_job_reconcile_task": {"queue": "payouts_stripe"},
    # Operations tasks run beside the deadline sweep, never behind a long payout queue.
    "payouts.tasks.ops_alerts_check_task": {"queue": "scheduler"},
    "payouts.tasks.retention_run_task": {"queue": "scheduler"},
    # Creating a job's notifications (a million rows) must not hold up payout workers.
    "payouts.tasks.payout_job_notify_task": {"queue": "notifications"},
    # The hourly money check reads for seconds: never in the way of a payout batch.
    "payouts.tasks.platform_audit_task": {"queue": "scheduler"},
    "payouts.tasks.*": {"queue": "payouts"},
    "notifications.tasks.*": {"queue": "notifications"},
    "challenges.tasks.*": {"queue": "scheduler"},
    "core.tasks.*": {"queue": "default"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
# Retry policy of the base task (core.tasks.BaseTask): delay = base * 2**attempt, capped,
# stretched by up to 25% of jitter: 5 s, 10 s, 20 s, 40 s, 80 s by default.
TASK_RETRY_BACKOFF_BASE = env.float("TASK_RETRY_BACKOFF_BASE", default=5.0)
TASK_RETRY_BACKOFF_MAX = env.float("TASK_RETRY_BACKOFF_MAX", default=600.0)
TASK_MAX_RETRIES = env.int("TASK_MAX_RETRIES", default=5)

# --- Outside services -----------------------------------------------------------------------
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_RATE_LIMIT = env.float("STRIPE_RATE_LIMIT", default=25.0)
STRIPE_RATE_BURST = env.int("STRIPE_RATE_BURST", default=5)
STRIPE_MAX_ATTEMPTS = env.int("STRIPE_MAX_ATTEMPTS", default=8)
# The currency of Stripe transfers; one platform coin (minor unit) is one minor unit of it.
STRIPE_CURRENCY = env.str("STRIPE_CURRENCY", default="usd")
# Seconds one Stripe request may take before it counts as a (transient) timeout.
STRIPE_TIMEOUT = env.float("STRIPE_TIMEOUT", default=30.0)
# Entry retries after transient Stripe errors: base * 2**attempt with jitter, capped.
STRIPE_RETRY_BACKOFF_BASE = env.float("STRIPE_RETRY_BACKOFF_BASE", default=5.0)
STRIPE_RETRY_BACKOFF_MAX = env.float("STRIPE_RETRY_BACKOFF_MAX", default=600.0)
# Entries one Stripe batch task claims, and how long its lease on them lasts; the lease must
# cover claim size / rate limit plus the request timeout, or the watchdog re-claims early
# (harmless: the idempotency key makes the second call return the same transfer).
STRIPE_CLAIM_SIZE = env.int("STRIPE_CLAIM_SIZE", default=10)
STRIPE_LEASE_SECONDS = env.int("STRIPE_LEASE_SECONDS", default=120)
# One Stripe batch task works this long, then hands over to a fresh message (fair to other
# jobs); it must stay below CELERY_VISIBILITY_TIMEOUT or Redis delivers the message twice.
STRIPE_BATCH_SECONDS = env.float("STRIPE_BATCH_SECONDS", default=30.0)
# Where Stripe's hosted Connect onboarding sends the user back: when they finished (return) and
# when their link expired and the app must make a fresh one (refresh, by calling
# POST /api/payout-account/ again). Pages of the app's front end.
STRIPE_CONNECT_RETURN_URL = env.str(
    "STRIPE_CONNECT_RETURN_URL", default="http://localhost:8000/payout-account/done"
)
STRIPE_CONNECT_REFRESH_URL = env.str(
    "STRIPE_CONNECT_REFRESH_URL", default="http://localhost:8000/payout-account/refresh"
)

PUSHER_APP_ID = env.str("PUSHER_APP_ID", default="")
PUSHER_KEY = env.str("PUSHER_KEY", default="")
PUSHER_SECRET = env.str("PUSHER_SECRET", default="")
PUSHER_CLUSTER = env.str("PUSHER_CLUSTER", default="mt1")
# Host/port/ssl override Pusher's own endpoint (tests point them at a local server).
PUSHER_HOST = env.str("PUSHER_HOST", default="")
PUSHER_PORT = env.int("PUSHER_PORT", default=0)
PUSHER_SSL = env.bool("PUSHER_SSL", default=True)

# Where staff find Flower (the console's queue figures link to it); empty hides the link.
FLOWER_URL = env.str("FLOWER_URL", default="")

# --- Errors, logs and metrics (README, "Operations") ----------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production")
SENTRY_RELEASE = env.str("SENTRY_RELEASE", default="") or release_default()
# Every transaction while developing, a tenth in production (enough for latency figures).
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=1.0 if DEBUG else 0.1)
if SENTRY_DSN:
    sentry_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        release=SENTRY_RELEASE,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# JSON lines for log pipelines in production; text for people at a terminal.
LOG_FORMAT = env.str("LOG_FORMAT", default="console" if DEBUG else "json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
# Workers log through LOGGING too (same format and context fields), not Celery's own setup.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# /metrics answers only with "Authorization: Bearer <METRICS_TOKEN>"; without a token set it
# does not exist (404).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# /readyz asks the database at most once per this many seconds per process.
READYZ_CACHE_SECONDS = env.float("READYZ_CACHE_SECONDS", default=3.0)

# Alerts (payouts.services.alerts), evaluated every minute by beat.
ALERT_JOB_MAX_SECONDS = env.int("ALERT_JOB_MAX_SECONDS", default=3600)
ALERT_MIN_PAYOUTS_PER_S = env.float("ALERT_MIN_PAYOUTS_PER_S", default=10.0)
ALERT_QUEUE_UNSERVED_SECONDS = env.int("ALERT_QUEUE_UNSERVED_SECONDS", default=120)
ALERT_DEAD_LETTERS_OPEN = env.int("ALERT_DEAD_LETTERS_OPEN", default=10)
ALERT_REPEAT_SECONDS = env.int("ALERT_REPEAT_SECONDS", default=3600)

# Retention (payouts.services.retention), nightly.
RETENTION_NOTIFICATIONS_DAYS = env.int("RETENTION_NOTIFICATIONS_DAYS", default=90)
RETENTION_EVENTS_DAYS = env.int("RETENTION_EVENTS_DAYS", default=30)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=5_000)
