"""Settings: one module, everything from the environment (12-factor).

Every value is read through the single ``env`` object. Development defaults exist only for
things that are not secrets; with ``DEBUG`` off the process refuses to start without
``DJANGO_SECRET_KEY``. ``DATABASE_URL`` and ``REDIS_URL`` point at real servers in production;
``deploy/devstack.py`` exports URLs of embedded servers for development and tests.
"""

from datetime import timedelta
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

# --- HTTPS ----------------------------------------------------------------------------------
# With DEBUG off, cookies travel only over HTTPS and browsers are told (HSTS) to use nothing
# else. `make up` serves plain HTTP on loopback and turns the cookie flags off for its children.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy, Django sees plain HTTP; the proxy says what the client used in
# X-Forwarded-Proto. Trust it only when a proxy that overwrites the header is really in front
# (opt-in: a client could otherwise claim HTTPS itself).
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Off by default: TLS ends at the proxy, which redirects plain HTTP itself; a redirect here would
# also send health checks (plain HTTP from inside the cluster) away.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SILENCED_SYSTEM_CHECKS = [
    # HSTS for every subdomain and the browsers' preload list bind the operator's whole domain
    # for months: opt-in with the two settings above.
    "security.W005",
    "security.W021",
    # SECURE_SSL_REDIRECT: see above, the proxy redirects.
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
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
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
    # Before anything reads a body: an oversized one is refused with 413 (its own JSON).
    "core.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last: it answers a locked-out admin login (django-axes).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The project's overrides of third-party templates (the admin's pagination line and
        # search bar).
        "DIRS": [BASE_DIR / "config" / "templates"],
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
# Django's PostgreSQL backend, checking a kept connection without a round trip and preparing the
# statements every request runs (core/db_backend).
DATABASES["default"]["ENGINE"] = "core.db_backend"
# Prepared at their first execution on a connection (only ``connection.prepared_cursor()``'s
# statements are; Django's own cursors bind on the client and never prepare). Off for a
# connection pooler that cannot keep prepared statements (PgBouncer before 1.21, in transaction
# mode).
if env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 0
# No statement may run longer than this (seconds; 0 = no limit): a slow query fails and frees
# its connection instead of piling up requests behind it. The proof runs (`make bench`,
# `make chaos`) seed millions of rows and lift it.
DATABASE_STATEMENT_TIMEOUT = env.float("DATABASE_STATEMENT_TIMEOUT", default=30.0)
if DATABASE_STATEMENT_TIMEOUT:
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c statement_timeout={int(DATABASE_STATEMENT_TIMEOUT * 1000)}"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-axes first: it refuses a locked-out admin login before any password is hashed.
AUTHENTICATION_BACKENDS = [
    "users.auth.AdminLockoutBackend",
    # Django's ModelBackend, with a one-statement permission check (users/auth.py).
    "users.auth.PermissionBackend",
]

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
        "users.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    # Client addresses for throttling: X-Forwarded-For is believed only as far as this many
    # proxies of ours wrote it (0: the socket's address), so a client cannot pick its own.
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
}
# The API schema and Swagger UI: staff only unless API_DOCS_PUBLIC is set. The UI's scripts
# come from the project's own static files (drf-spectacular-sidecar), never from a CDN.
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=False)
SPECTACULAR_SETTINGS = {
    "TITLE": "Stakehold API",
    "DESCRIPTION": (
        "Challenges, escrowed stakes, notifications and batched payouts. Every error is "
        "`{code, detail}` JSON (the `Error` schema); amounts are integers of minor units."
    ),
    "VERSION": "0.1.0",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": [
        "rest_framework.permissions.AllowAny" if API_DOCS_PUBLIC else "core.api.IsStaff"
    ],
    # The schema endpoint itself is not an operation of the API.
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Request bodies larger than these are refused with 413 before anything reads them: small for
# the API (its largest input is a challenge's description), larger for Stripe's events.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1024 * 1024)
# JSON nested deeper than this is a 400 malformed_request (no API input nests beyond 3).
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(API_MAX_BODY_BYTES, WEBHOOK_MAX_BODY_BYTES)

# --- Throttling -----------------------------------------------------------------------------
# DRF's rate format ("10/min", "1000/hour"); an empty value turns a scope off. Counted in the
# shared cache (Redis), so every web process counts together. The load tools (`make bench`,
# `make chaos`) and the test suite set their own rates; these defaults are for production.
THROTTLE_RATES = {
    # token, register, password change: per client address and per username
    "auth": env.str("THROTTLE_AUTH", default="10/min") or None,
    # stakes and deposits, per user
    "money": env.str("THROTTLE_MONEY", default="60/min") or None,
    # challenge creation, per user
    "create": env.str("THROTTLE_CREATE", default="30/hour") or None,
    # every staff endpoint, per staff user
    "staff": env.str("THROTTLE_STAFF", default="600/min") or None,
}

# --- Tokens ---------------------------------------------------------------------------------
# django-rest-knox: only a hash of each token is stored, every token expires after TOKEN_TTL
# seconds, and clients send `Authorization: Token <token>` as before.
TOKEN_TTL = env.int("TOKEN_TTL", default=12 * 3600)
REST_KNOX = {
    "TOKEN_TTL": timedelta(seconds=TOKEN_TTL),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

# --- Admin login lockout (django-axes) -------------------------------------------------------
# After AXES_FAILURE_LIMIT failed admin logins from one address or for one username, that
# address or username is locked out for AXES_COOLOFF_MINUTES. The API's token endpoint is
# throttled instead (THROTTLE_AUTH), so a locked admin page never locks the API.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_CLIENT_IP_CALLABLE = "core.api.client_ip"
AXES_RESET_ON_SUCCESS = True

# --- Money ----------------------------------------------------------------------------------
CURRENCY = env.str("CURRENCY", default="coin")
# Platform fee on the losing pool, in basis points; copied onto each payout job when it is
# created so a later change never alters a settled job.
PLATFORM_FEE_BPS = env.int("PLATFORM_FEE_BPS", default=500)
if not 0 <= PLATFORM_FEE_BPS <= 10_000:
    raise ImproperlyConfigured("PLATFORM_FEE_BPS must be between 0 and 10000")


def _optional_amount(name: str, default: int) -> int | None:
    """A cap in minor units; set to an empty value, it is unset (no cap)."""
    raw = env.str(name, default=str(default))
    return int(raw) if raw else None


# Caps on staff deposits, in minor units: per deposit, and per staff member per UTC day.
# Superusers are bound too; an empty value removes a cap.
DEPOSIT_MAX_AMOUNT = _optional_amount("DEPOSIT_MAX_AMOUNT", 1_000_000)
DEPOSIT_DAILY_LIMIT = _optional_amount("DEPOSIT_DAILY_LIMIT", 10_000_000)
# Open (pending or active) challenges one user may have created at once.
CHALLENGE_OPEN_LIMIT = env.int("CHALLENGE_OPEN_LIMIT", default=20)
PAYOUT_DEFAULT_RAIL = env.str("PAYOUT_DEFAULT_RAIL", default="ledger")
# Entries per transaction that pays them: a ledger slice (created and paid at once) or a batch;
# a ledger job runs PAYOUT_PARALLELISM chains of them at once.
PAYOUT_BATCH_SIZE = env.int("PAYOUT_BATCH_SIZE", default=10_000)
PAYOUT_PARALLELISM = env.int("PAYOUT_PARALLELISM", default=2)
# Stakes per expansion slice on the Stripe rail: its entries are created pending slice by
# slice, and each slice is paid while the next one is being created.
PAYOUT_EXPAND_CHUNK = env.int("PAYOUT_EXPAND_CHUNK", default=100_000)
# Stakes in a job's first slice, sent ahead of the work already queued and paid by the
# expansion itself on the ledger rail (by a first batch of as many entries on the Stripe rail):
# kept small so that each of many jobs resolved together pays its first winners within seconds
# instead of waiting behind the jobs resolved before it.
PAYOUT_START_SIZE = env.int("PAYOUT_START_SIZE", default=100)

# --- Redis and Celery -----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Seconds a Redis call may wait: a hung Redis fails requests and tasks fast instead of
# holding every web process.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=5.0)
REDIS_SOCKET_CONNECT_TIMEOUT = env.float("REDIS_SOCKET_CONNECT_TIMEOUT", default=3.0)
# The shared cache: throttle counters and admin lockouts, counted across every process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": "stakehold",
        "OPTIONS": {
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": REDIS_SOCKET_CONNECT_TIMEOUT,
        },
    }
}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_RESULT_EXPIRES = 3600
# Nothing reads a task's return value: Postgres holds every outcome, so storing results only
# added a Redis write per task (and one more thing to fail while Redis restarts).
CELERY_TASK_IGNORE_RESULT = True
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
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_SOCKET_CONNECT_TIMEOUT,
}
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_SOCKET_TIMEOUT
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_SOCKET_CONNECT_TIMEOUT
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
# Workers report each task to Flower (received, started, succeeded, failed). Senders do not
# add a "task-sent" event: it is a second Redis publish on every send (about 0.4 ms of a
# resolve's 4 ms, and one per payout batch), and a task still waiting in its queue is what
# Flower's broker page counts.
CELERY_WORKER_SEND_TASK_EVENTS = True
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
# Requests that may start together after a pause; 1 paces them evenly, 1 / STRIPE_RATE_LIMIT
# apart (payouts/services/ratelimit.py).
STRIPE_RATE_BURST = env.int("STRIPE_RATE_BURST", default=1)
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
# Threads of one Stripe worker process (the `payouts_stripe` queue runs Celery's threads pool:
# its tasks wait on Stripe and on the rate limit, not on the CPU). Celery takes it as the
# concurrency of a worker started without -c, and the Stripe worker is the only role that
# does (deploy/processes.py); every other role passes its own -c.
STRIPE_WORKER_CONCURRENCY = env.int("STRIPE_WORKER_CONCURRENCY", default=16)
CELERY_WORKER_CONCURRENCY = STRIPE_WORKER_CONCURRENCY
# Batches in flight per Stripe-rail job (a ledger job takes PAYOUT_PARALLELISM): each batch
# makes one Stripe call at a time, so this many threads of the pool work on one job at once.
STRIPE_PARALLELISM = env.int("STRIPE_PARALLELISM", default=STRIPE_WORKER_CONCURRENCY)
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
