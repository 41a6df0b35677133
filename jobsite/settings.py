"""jobsite settings: one module, read from the environment (see docs/configuration.md).

Every variable has a default that suits development on one machine, except where production must
decide (SECRET_KEY when DEBUG is off). A bad value stops the process with a message naming it.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from jobsite.env import (
    ConfigError,
    env_bool,
    env_int,
    env_list,
    env_str,
    env_url,
    redis_db_number,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
_DEV_SECRET_KEY = "django-insecure-development-only-never-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ConfigError("SECRET_KEY is not set; it is required when DEBUG is off")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # First: its templates override the admin's (header links) and its admin module replaces
    # django-celery-beat's PeriodicTask admin.
    "ops",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "scheduler",
    "games",
    "referrals",
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
]

ROOT_URLCONF = "jobsite.urls"
WSGI_APPLICATION = "jobsite.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
                "ops.context_processors.ops_links",
            ],
        },
    },
]

# ---------------------------------------------------------------------------------------------
# Database: PostgreSQL only. `make run` / `make test` start an embedded server on the default port
# below when DATABASE_URL is not set. https://github.com/jazzband/dj-database-url
# ---------------------------------------------------------------------------------------------
DATABASE_URL = env_url(
    "DATABASE_URL",
    "postgres://postgres@127.0.0.1:54329/jobsite",
    schemes=("postgres", "postgresql", "pgsql"),
)
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
except ValueError as exc:
    raise ConfigError(f"DATABASE_URL cannot be parsed: {exc}") from None
if not _db.get("NAME"):
    raise ConfigError("DATABASE_URL names no database (postgres://user@host:port/NAME)")
_db["OPTIONS"] = {"connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)}
# The run path sends its two statements per run as prepared statements (scheduler/sql.py).
# Django turns psycopg's preparing off (None) for connection poolers; its own queries are bound
# client-side and are never prepared either way. PgBouncer in transaction mode (before 1.21)
# cannot keep prepared statements: DATABASE_PREPARED_STATEMENTS=0 there.
if env_bool("DATABASE_PREPARED_STATEMENTS", True):
    _db["OPTIONS"]["prepare_threshold"] = 5  # psycopg's default
DATABASES = {"default": _db}

# ---------------------------------------------------------------------------------------------
# Internationalisation: a scheduler never holds a naive datetime.
# ---------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ---------------------------------------------------------------------------------------------
# Static files, served by WhiteNoise under gunicorn.
# ---------------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
# WhiteNoise warns at every start when the folder is missing (before the first collectstatic).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# ---------------------------------------------------------------------------------------------
# Security. Production: DEBUG off, HTTPS behind a proxy that sets X-Forwarded-Proto.
# `manage.py check --deploy` is clean with these defaults. https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# ---------------------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz(/ready|/beat)?$"]  # load balancers probe over plain HTTP
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024  # the API takes small JSON bodies only

# ---------------------------------------------------------------------------------------------
# Redis: Celery broker and job locks.
# ---------------------------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:63799/0", schemes=("redis", "rediss"))
redis_db_number("REDIS_URL", REDIS_URL)

# ---------------------------------------------------------------------------------------------
# Celery. https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ---------------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# JSON only: a pickle message is refused, so nobody can make a worker unpickle attacker data.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
# Jobs are idempotent (slot claim + constraints), so a message is acknowledged after the run and a
# run lost with its worker is delivered again. https://docs.celeryq.dev/en/stable/faq.html#faq-acks-late-vs-retry
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Results: django-celery-results, with task name, args and worker; the ledger links by task id.
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = None  # retention-pruning deletes old results in batches instead
# Celery closes the Django connection after every task (celery#9824): one new PostgreSQL connection
# per task cut throughput ~4x here. Reuse it for up to this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
# Events for Flower.
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_TRACK_STARTED = True
# Logging is Django's LOGGING below.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Redis visibility timeout: a message not acknowledged within it is delivered again. Countdown
# (offset <= 59 s) and ETA messages are unacknowledged while they wait, and with acks_late a
# running job too, so it must exceed offset + queue wait + the longest job (JOB_TIME_LIMIT, 30 min
# by default). It is also how long a countdown message held by a SIGKILLed worker stays invisible;
# the reconciler, not this timeout, recovers such a slot (it records it missed or re-sends it).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10),
}
CELERY_TASK_DEFAULT_QUEUE = "default"
# The database scheduler (our subclass adds per-job second offsets): plain `celery beat` uses it.
CELERY_BEAT_SCHEDULER = "scheduler.schedulers:JobScheduler"
# Beat wakes at least this often; a schedule edited in the admin is seen within it.
CELERY_BEAT_MAX_LOOP_INTERVAL = env_int("CELERY_BEAT_MAX_LOOP_INTERVAL", 5, minimum=1, maximum=300)
DJANGO_CELERY_BEAT_TZ_AWARE = True

# ---------------------------------------------------------------------------------------------
# Flower: basic auth from the environment (FLOWER_BASIC_AUTH=user:password), read by Flower itself.
# ---------------------------------------------------------------------------------------------
FLOWER_URL = env_str("FLOWER_URL", "http://127.0.0.1:5555/")

# ---------------------------------------------------------------------------------------------
# Ops API: JSON only, staff only, per-user tokens (`manage.py drf_create_token USERNAME`) or the
# admin session. Anonymous callers get 401 (token auth first answers WWW-Authenticate), non-staff
# 403. https://www.django-rest-framework.org/api-guide/settings/
# ---------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Each view declares its permissions per method (ops.api.permissions, docs/security.md); a
    # view that forgets serves no one.
    "DEFAULT_PERMISSION_CLASSES": ["ops.api.permissions.DenyUndeclared"],
    # Bodies are capped at DATA_UPLOAD_MAX_MEMORY_SIZE while read (DRF streams past Django's check).
    "DEFAULT_PARSER_CLASSES": ["ops.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "ops.api.exceptions.api_exception_handler",
    # Lists answer a page (?limit=, default 50, at most 500; ?offset=) with count/next/previous.
    "DEFAULT_PAGINATION_CLASS": "ops.api.pagination.ListPage",
}
# OpenAPI 3 schema at /api/schema/: any active staff user (the API's shape, no data).
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "jobsite ops API",
    "DESCRIPTION": "Jobs, schedules, history and retries of the jobsite scheduler.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "COMPONENT_SPLIT_REQUEST": True,
}
# Client address recorded in the audit trail: REMOTE_ADDR, or with N trusted reverse proxies in
# front (e.g. 1 behind one nginx) the N-th X-Forwarded-For entry from the right.
OPS_TRUSTED_PROXIES = env_int("OPS_TRUSTED_PROXIES", 0, minimum=0, maximum=10)

# ---------------------------------------------------------------------------------------------
# Health and metrics (docs/operations.md, "Health checks"). Beat stamps a heartbeat row every few
# seconds (scheduler.heartbeat) and ticks at least every CELERY_BEAT_MAX_LOOP_INTERVAL; older than
# HEALTH_BEAT_DOWN_AFTER seconds, beat is down (/healthz/beat 503, jobsite_beat_up 0). The load
# balancer's /healthz and /healthz/ready ignore beat unless HEALTH_BEAT_REQUIRED is on.
# /metrics is for staff (token or session) only.
# ---------------------------------------------------------------------------------------------
HEALTH_BEAT_DOWN_AFTER = env_int("HEALTH_BEAT_DOWN_AFTER", 60, minimum=15, maximum=3600)
if HEALTH_BEAT_DOWN_AFTER < 3 * CELERY_BEAT_MAX_LOOP_INTERVAL:
    raise ConfigError(
        f"HEALTH_BEAT_DOWN_AFTER={HEALTH_BEAT_DOWN_AFTER} must be at least three beat ticks "
        f"(3 x CELERY_BEAT_MAX_LOOP_INTERVAL={CELERY_BEAT_MAX_LOOP_INTERVAL}), or a live beat "
        "would be reported down"
    )
HEALTH_BEAT_REQUIRED = env_bool("HEALTH_BEAT_REQUIRED", False)
# The watchdog (`manage.py watchdog`, ops.watchdog) runs the reconciler and alerts every this many
# seconds; a dead beat is paged within HEALTH_BEAT_DOWN_AFTER + this.
WATCHDOG_INTERVAL = env_int("WATCHDOG_INTERVAL", 30, minimum=1, maximum=300)

# ---------------------------------------------------------------------------------------------
# E-mail: Django's backend, used by alerts (ops.alerts; recipients in JOBSITE_ALERT_EMAILS, read
# by ops.conf with the other alert settings). https://docs.djangoproject.com/en/5.2/topics/email/
# ---------------------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ConfigError("EMAIL_USE_TLS and EMAIL_USE_SSL are both on; choose one (STARTTLS or TLS)")
# Django waits forever on a silent SMTP server by default.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1, maximum=300)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "jobsite@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# ---------------------------------------------------------------------------------------------
# Logging: one format for web, worker and beat.
# ---------------------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ConfigError(
        f"LOG_LEVEL={LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": LOG_LEVEL},
    },
}
