"""Provides the hub's settings, every one read from the environment (see README, Configuration)."""

import os
import warnings
from pathlib import Path

import environ
from django.core.management.utils import get_random_secret_key

from eventhub.redis_connection import redis_host

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Production must set SECRET_KEY. Development generates one into a git-ignored file, so that
# sessions and subscriber tokens survive restarts of `make run`.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off.")
    _dev_key_file = BASE_DIR / ".dev-secret-key"
    if not _dev_key_file.exists():
        _dev_key_file.write_text("dev-insecure-" + get_random_secret_key())
    SECRET_KEY = _dev_key_file.read_text().strip()
# Keys SECRET_KEY was before, still accepted while what they signed or sealed ages out:
# sessions, subscriber tokens, token ids, webhook secrets (re-seal those with
# `manage.py reseal_webhook_secrets`, then drop the old key). Comma-separated. Read as it is:
# django-environ takes a value starting with "$" (which Django's keys may) for a reference to
# another variable, and keeps the spaces around commas.
SECRET_KEY_FALLBACKS = [
    key.strip() for key in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()
]
# Whoever knows SECRET_KEY forges sessions and subscriber tokens for every tenant: with DEBUG
# off a guessable one is refused at start-up (Django's own check only warns, under --deploy).
ENV_EXAMPLE_SECRET_KEY = "change-me-to-50-random-characters"
DEVELOPMENT_SECRET_PREFIXES = ("dev-insecure-", "django-insecure-")


def _weak(key: str) -> bool:
    return (
        len(key) < 50
        or len(set(key)) < 5
        or key == ENV_EXAMPLE_SECRET_KEY
        or key.startswith(DEVELOPMENT_SECRET_PREFIXES)
    )


# A fallback verifies signatures as SECRET_KEY does: a weak one is as forgeable.
for _name, _weak_keys in (
    ("SECRET_KEY", [SECRET_KEY]),
    ("SECRET_KEY_FALLBACKS", SECRET_KEY_FALLBACKS),
):
    if not DEBUG and any(_weak(k) for k in _weak_keys):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"{_name} is too weak for DEBUG off: use at least 50 random characters, not the "
            ".env.example placeholder or a development key. Make one with: python -c 'from "
            "django.core.management.utils import get_random_secret_key as k; print(k())'"
        )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
EVENTHUB_ALLOWED_ORIGINS = env.list("EVENTHUB_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # streams before channels: its runworker also drains the persistence queue.
    "streams",
    "tenants",
    "webhooks",
    "dashboard",
    "channels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "eventhub.exceptions.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "eventhub.urls"
ASGI_APPLICATION = "eventhub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets history reads run beside the persistence writer; IMMEDIATE avoids lock upgrades.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # Under ASGI each request runs in a thread of its own, so persistent connections
    # (CONN_MAX_AGE) would stay open in finished threads until the garbage collector finds
    # them (seen: PostgreSQL's 100 connections used up). Django's advice for ASGI is a pool:
    # a connection goes back to it at the end of each request, and is checked before reuse.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # with a pool: checked on checkout
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_SIZE", default=20),
        # How long a request waits for a connection: while the database is down, each one
        # that needs it waits this long before its 503 (keys read before are served from
        # memory meanwhile: tenants/selectors.py).
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=3.0),
        # How long the pool keeps retrying a connection it lost, its waits doubling each time,
        # before it gives up and the next checkout starts again from a 1 s wait. psycopg_pool's
        # 5 minutes let its waits grow past a minute: after a minute-long outage, the log took up
        # to another minute to catch up (tests/scaleout/test_outages.py, seen failing in CI).
        "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis, for the channel layer and all shared state: a URL (rediss:// for TLS, verified against
# the system's CAs or REDIS_TLS_CA_FILE), or Sentinels that name the master of a service.
# REDIS is how every client connects (eventhub/redis_connection.py); None: the embedded default.
REDIS_URL = env.str("REDIS_URL", default="")
REDIS = redis_host(
    url=REDIS_URL,
    tls_ca_file=env.str("REDIS_TLS_CA_FILE", default=""),
    tls_verify=env.str("REDIS_TLS_VERIFY", default="1"),
    sentinels=env.list("REDIS_SENTINELS", default=[]),
    sentinel_service=env.str("REDIS_SENTINEL_SERVICE", default=""),
    sentinel_password=env.str("REDIS_SENTINEL_PASSWORD", default=""),
    password=env.str("REDIS_PASSWORD", default=""),
)
if REDIS is not None:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS]},
        }
    }
else:
    # One process: the layer only carries one message per event to this process's hub, so its
    # capacity must hold a whole burst (the in-memory layer drops silently when full).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000, "expiry": 3600},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served from the app's static folders directly, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
warnings.filterwarnings("ignore", message="No directory at")
WHITENOISE_MIMETYPES = {".js": "text/javascript"}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

# Largest request body read at all; an event's own limit is EVENTHUB_MAX_EVENT_BYTES.
EVENTHUB_MAX_BODY_BYTES = env.int("EVENTHUB_MAX_BODY_BYTES", default=4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = EVENTHUB_MAX_BODY_BYTES

EVENTHUB_HEARTBEAT_INTERVAL = env.float("EVENTHUB_HEARTBEAT_INTERVAL", default=15.0)
EVENTHUB_STALE_TIMEOUT = env.float("EVENTHUB_STALE_TIMEOUT", default=30.0)
# Presence: a user leaves a topic this long after its last connection there went away.
EVENTHUB_PRESENCE_GRACE = env.float("EVENTHUB_PRESENCE_GRACE", default=5.0)
# Users listed per exact topic, and per tenant over its topics; beyond, counted, not listed.
EVENTHUB_PRESENCE_MAX_PER_TOPIC = env.int("EVENTHUB_PRESENCE_MAX_PER_TOPIC", default=1000)
EVENTHUB_PRESENCE_MAX_PER_TENANT = env.int("EVENTHUB_PRESENCE_MAX_PER_TENANT", default=10000)
EVENTHUB_MAX_EVENT_BYTES = env.int("EVENTHUB_MAX_EVENT_BYTES", default=65536)
EVENTHUB_MAX_BATCH = env.int("EVENTHUB_MAX_BATCH", default=500)
EVENTHUB_REPLAY_WINDOW = env.int("EVENTHUB_REPLAY_WINDOW", default=1000)
EVENTHUB_REPLAY_MAX = env.int("EVENTHUB_REPLAY_MAX", default=10000)
# Most bytes of event JSON one reconnect may replay (contract v2); a larger gap is not replayed.
EVENTHUB_REPLAY_MAX_BYTES = env.int("EVENTHUB_REPLAY_MAX_BYTES", default=16 * 1024 * 1024)
# Most bytes of event JSON in one page of the history API (a page holds at least one event).
EVENTHUB_HISTORY_MAX_BYTES = env.int("EVENTHUB_HISTORY_MAX_BYTES", default=4 * 1024 * 1024)
# Bytes a client may leave unread before it is closed as a slow consumer (4008).
EVENTHUB_MAX_BUFFER_BYTES = env.int("EVENTHUB_MAX_BUFFER_BYTES", default=4 * 1024 * 1024)
EVENTHUB_MAX_DATA_DEPTH = env.int("EVENTHUB_MAX_DATA_DEPTH", default=32)
# Events a process's hub may hold queued for one tenant's delivery (streams/delivery/hub.py).
EVENTHUB_HUB_INBOX_EVENTS = env.int("EVENTHUB_HUB_INBOX_EVENTS", default=10_000)
# Webhooks (webhooks/): a 2xx within the timeout is success; otherwise retried after each delay
# of the schedule in turn (seconds, ±20 % jitter), then dead.
EVENTHUB_WEBHOOK_TIMEOUT = env.float("EVENTHUB_WEBHOOK_TIMEOUT", default=10.0)
EVENTHUB_WEBHOOK_RETRY_SCHEDULE = [
    float(s)
    for s in env.str(
        "EVENTHUB_WEBHOOK_RETRY_SCHEDULE", default="5,30,120,600,1800,3600,10800,21600,43200"
    ).split(",")
    if s.strip()
]
# Loopback, private, link-local and reserved addresses are refused unless this is set.
EVENTHUB_WEBHOOK_ALLOW_PRIVATE = env.bool("EVENTHUB_WEBHOOK_ALLOW_PRIVATE", default=False)
# Whether this process sends webhooks: the web process on the embedded default, the persistence
# worker with Redis (tests of other things turn it off).
EVENTHUB_WEBHOOK_SENDER = env.bool("EVENTHUB_WEBHOOK_SENDER", default=True)
# Requests in flight to one endpoint at a time, per sending process.
EVENTHUB_WEBHOOK_CONCURRENCY = env.int("EVENTHUB_WEBHOOK_CONCURRENCY", default=4)
# An endpoint whose deliveries have all failed for this long is disabled (default 5 days).
EVENTHUB_WEBHOOK_DISABLE_AFTER = env.float("EVENTHUB_WEBHOOK_DISABLE_AFTER", default=5 * 86400.0)
# A rotated-out secret still signs (a second signature) for this long (default 1 day).
EVENTHUB_WEBHOOK_SECRET_GRACE = env.float("EVENTHUB_WEBHOOK_SECRET_GRACE", default=86400.0)

# Events written by the log writer in one transaction, and how long it waits to fill a batch.
EVENTHUB_PERSIST_BATCH = env.int("EVENTHUB_PERSIST_BATCH", default=500)
EVENTHUB_PERSIST_LINGER = env.float("EVENTHUB_PERSIST_LINGER", default=0.05)
# A log-stream entry a worker took but did not acknowledge for this long is taken by another.
EVENTHUB_CLAIM_IDLE = env.float("EVENTHUB_CLAIM_IDLE", default=30.0)
# While the database is unreachable, a key read before is trusted for this long after that read
# (a key never read is refused with 503 then).
EVENTHUB_KEY_STALE_SECONDS = env.float("EVENTHUB_KEY_STALE_SECONDS", default=600.0)
# Events accepted but not yet in the log, at most (over every tenant; with Redis, of the whole
# cluster): beyond it publishing answers 503 until the log catches up (a database outage).
EVENTHUB_LOG_BACKLOG_MAX = env.int("EVENTHUB_LOG_BACKLOG_MAX", default=100_000)
# The persistence worker's own /metrics and /healthz (REDIS_URL only); 0: none.
EVENTHUB_WORKER_METRICS_PORT = env.int("EVENTHUB_WORKER_METRICS_PORT", default=0)
# Garbage-collector thresholds of a serving process (eventhub/gctuning.py); empty: CPython's.
EVENTHUB_GC_THRESHOLDS = [
    int(x) for x in env.list("EVENTHUB_GC_THRESHOLDS", default=["50000", "20", "100"]) if x
]
# Fix glibc's malloc thresholds above a publish body's size (eventhub/malloctuning.py).
EVENTHUB_MALLOC_TUNING = env.bool("EVENTHUB_MALLOC_TUNING", default=True)
# How long an authenticated API key is trusted from the process cache before it is re-read.
EVENTHUB_KEY_CACHE_SECONDS = env.float("EVENTHUB_KEY_CACHE_SECONDS", default=2.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["eventhub.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "eventhub.exceptions.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Eventhub API",
    "DESCRIPTION": (
        "Publish events, read history and issue subscriber tokens. The subscription "
        "interfaces (WebSocket and Server-Sent Events: channels, query parameters, frames, "
        "close codes) are described by the AsyncAPI 3 document at "
        "[/api/asyncapi.json](/api/asyncapi.json)."
    ),
    "EXTERNAL_DOCS": {
        "description": "AsyncAPI 3 document of the WebSocket and SSE interfaces",
        "url": "/api/asyncapi.json",
    },
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# TLS, its redirect and HSTS belong to the reverse proxy in front of the hub
# (docs/deployment.md); set these to have Django enforce them as well.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SILENCED_SYSTEM_CHECKS = env.list(
    "SILENCED_SYSTEM_CHECKS", default=["security.W004", "security.W008"]
)
