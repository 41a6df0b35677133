"""jobsite settings: one module, read from the environment (see docs/configuration.md).

Every variable has a default that suits development on one machine, except where production must
decide (SECRET_KEY when DEBUG is off). A bad value stops the process with a message naming it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from core.env import (
    ConfigError,
    env_bool,
    env_decimal,
    env_int,
    env_list,
    env_str,
    env_url,
    redis_db_number,
)
from games import conf as games_conf
from monitoring import conf as monitoring_conf
from referrals import conf as referrals_conf
from scheduler import conf as scheduler_conf
from scheduler.validators import OFFSET_MAX, OFFSET_MIN

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
    "jobsite.admin_config.JobsiteAdminConfig",  # django.contrib.admin with our default site
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
    "axes",
    "scheduler",
    "monitoring",  # incidents, alerts, outages, the watchdog (after the scheduler it reads)
    "games",
    "referrals",
    "jobsite",  # the project's own commands (seed_demo, which calls each app's seeder)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "jobsite.middleware.refuse_nul_in_url",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as its documentation asks: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
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
# With DEBUG on, the error page lists settings, request data and local variables; these also mask
# the password in every URL-shaped value (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL...).
DEFAULT_EXCEPTION_REPORTER_FILTER = "jobsite.redaction.UrlPasswordReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "jobsite.redaction.UrlPasswordExceptionReporter"

# Content-Security-Policy on every page (django-csp; Django 5.2 has none of its own). Scripts only
# from our own origin, never inline: the admin and our templates need none. Inline *styles* are
# allowed: our templates and admin columns use style attributes, a far smaller risk than scripts.
# https://django-csp.readthedocs.io/en/latest/configuration.html
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins from one client address
# that address may not log in, even with the right password, for AXES_COOLOFF_MINUTES (answer
# 429). Per address, not per username, so nobody can lock an operator out from elsewhere. The
# address is the audit trail's (`ops.actors.client_ip`: OPS_TRUSTED_PROXIES applies). Attempts
# live in PostgreSQL, shared by every web process. Unlock early: `manage.py axes_reset`.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(
    minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60)
)
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_CLIENT_IP_CALLABLE = "ops.actors.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("AXES_ENABLED", True)

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
    # Documents every operation's error responses too (ops/api/schema.py).
    "DEFAULT_SCHEMA_CLASS": "ops.api.schema.OpsAutoSchema",
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
# The watchdog (`manage.py watchdog`, monitoring.watchdog) runs the reconciler and alerts every
# this many seconds; a dead beat is paged within HEALTH_BEAT_DOWN_AFTER + this.
WATCHDOG_INTERVAL = env_int("WATCHDOG_INTERVAL", 30, minimum=1, maximum=300)
# The watchdog stamps its own heartbeat at every pass (scheduler.heartbeat); older than this many
# seconds, it is down (/healthz/watchdog 503, jobsite_watchdog_up 0, the admin header red). The
# web process and Prometheus watch it: it cannot report its own death.
HEALTH_WATCHDOG_DOWN_AFTER = env_int(
    "HEALTH_WATCHDOG_DOWN_AFTER", max(120, 3 * WATCHDOG_INTERVAL), minimum=15, maximum=3600
)
if HEALTH_WATCHDOG_DOWN_AFTER < 2 * WATCHDOG_INTERVAL + 20:
    raise ConfigError(
        f"HEALTH_WATCHDOG_DOWN_AFTER={HEALTH_WATCHDOG_DOWN_AFTER} must be at least two passes "
        f"(2 x WATCHDOG_INTERVAL={WATCHDOG_INTERVAL}) plus a pass's 20 s delivery budget, or a "
        "live watchdog would be reported down"
    )

# ---------------------------------------------------------------------------------------------
# E-mail: Django's backend, used by alerts (monitoring.alerts; recipients in JOBSITE_ALERT_EMAILS,
# in ALERTS below with the other alert settings). https://docs.djangoproject.com/en/5.2/topics/email/
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


# =============================================================================================
# Jobs and the domain, in typed groups. Each group is a frozen dataclass declared by its app's
# `conf` module (which imports no models); apps read `django.conf.settings.SCHEDULER` etc., tests
# replace a group with pytest-django's `settings` fixture. Like everything above, read once at
# start: a change needs a restart of the processes that use it (docs/configuration.md).
# =============================================================================================


# ---------------------------------------------------------------------------------------------
# Scheduler: profile, stagger, reconciler, retention (scheduler.conf, docs/jobs.md).
# ---------------------------------------------------------------------------------------------
def scheduler_settings() -> scheduler_conf.SchedulerSettings:
    profile = env_str("JOBSITE_PROFILE", "production")
    if profile not in scheduler_conf.PROFILES:
        raise ConfigError(
            f"JOBSITE_PROFILE={profile!r} is not one of {', '.join(scheduler_conf.PROFILES)}"
        )
    ages = scheduler_conf.DEFAULT_RETENTION_SECONDS[profile]
    offsets = {
        name: env_int(name, 0, minimum=OFFSET_MIN, maximum=OFFSET_MAX)
        for name in sorted(os.environ)
        if name.startswith("JOB_STAGGER_") and name != "JOB_STAGGER_ENABLED"
    }
    return scheduler_conf.SchedulerSettings(
        profile=profile,
        job_modules=tuple(env_list("JOBSITE_JOB_MODULES", [])),
        stagger=scheduler_conf.StaggerSettings(
            # Read by beat at every send, from here: switching it needs a beat restart.
            enabled=env_bool("JOB_STAGGER_ENABLED", True),
            offsets=offsets,
        ),
        reconcile_grace_seconds=env_int("JOB_RECONCILE_GRACE", 90, minimum=5, maximum=3600),
        reconcile_lookback_seconds=env_int(
            "JOB_RECONCILE_LOOKBACK", 24 * 3600, minimum=60, maximum=30 * 24 * 3600
        ),
        retention=scheduler_conf.RetentionSettings(
            succeeded_seconds=env_int("RETENTION_SUCCEEDED_SECONDS", ages["succeeded"], minimum=60),
            failed_seconds=env_int("RETENTION_FAILED_SECONDS", ages["failed"], minimum=60),
        ),
    )


SCHEDULER = scheduler_settings()


# ---------------------------------------------------------------------------------------------
# Games: sessions, pools, cleanup, notifications (games.conf, docs/configuration.md).
# ---------------------------------------------------------------------------------------------
def games_settings() -> games_conf.GamesSettings:
    return games_conf.GamesSettings(
        session_expiry_minutes=env_int(
            "SESSION_EXPIRY_MINUTES", 30, minimum=1, maximum=7 * 24 * 60
        ),
        session_retention_days=env_int("GAMES_SESSION_RETENTION_DAYS", 30, minimum=1),
        max_duration_minutes={
            game: env_int(f"GAMES_MAX_DURATION_{game.upper()}", default, minimum=1)
            for game, default in games_conf.DEFAULT_MAX_DURATION_MINUTES.items()
        },
        daily_pool_share_percent=env_int("GAMES_DAILY_POOL_SHARE", 50, minimum=0, maximum=100),
        cleanup_batch_size=env_int("GAMES_CLEANUP_BATCH_SIZE", 10_000, minimum=1, maximum=100_000),
        notification_batch_size=env_int("GAMES_NOTIFICATION_BATCH_SIZE", 200, minimum=1),
        notification_max_attempts=env_int("GAMES_NOTIFICATION_MAX_ATTEMPTS", 8, minimum=1),
        notification_retry_seconds=env_int("GAMES_NOTIFICATION_RETRY_SECONDS", 60, minimum=1),
        notification_channel=env_str(
            "GAMES_NOTIFICATION_CHANNEL", "games.services.notifications.InboxChannel"
        ),
        stuck_batch_size=env_int("GAMES_STUCK_BATCH_SIZE", 500, minimum=1),
        # Players awarded per badge-auto-unlock chunk (two statements, one transaction).
        badge_batch_size=env_int("GAMES_BADGE_BATCH_SIZE", 5_000, minimum=1, maximum=100_000),
        row_max_attempts=env_int("GAMES_ROW_MAX_ATTEMPTS", 5, minimum=1),
        live_stats_retention_hours=env_int("GAMES_LIVE_STATS_RETENTION_HOURS", 48, minimum=1),
    )


GAMES = games_settings()


# ---------------------------------------------------------------------------------------------
# Referrals: rates, tier batches, settlement, payouts (referrals.conf, docs/configuration.md).
# ---------------------------------------------------------------------------------------------
def referral_settings() -> referrals_conf.ReferralSettings:
    # Exact decimals ("0.10"), never floats, non-increasing by tier (referrals.conf says why).
    rates = {
        tier: env_decimal(f"REFERRAL_TIER{tier}_RATE", default, places=referrals_conf.RATE_PLACES)
        for tier, default in referrals_conf.DEFAULT_RATES.items()
    }
    for tier in (2, 3):
        if rates[tier] > rates[tier - 1]:
            raise ConfigError(
                f"REFERRAL_TIER{tier}_RATE={rates[tier]} exceeds "
                f"REFERRAL_TIER{tier - 1}_RATE={rates[tier - 1]}; rates must not grow with the tier"
            )
    return referrals_conf.ReferralSettings(
        rates=rates,
        # One batch of tier-2/3 creation reads this many tier-1 rewards: ~10k rows, well under a
        # second and a few MB on the reference machine.
        tier_batch_size=env_int("REFERRAL_TIER_BATCH_SIZE", 10_000, minimum=1, maximum=1_000_000),
        # Each run re-reads tier-1 rewards of events this far behind its cursor, so an event whose
        # finishing transaction committed late is still picked up. Must exceed the longest
        # session-finishing transaction by far; an hour of events is cheap to re-read.
        tier_lag_seconds=env_int("REFERRAL_TIER_LAG_SECONDS", 3600, minimum=0),
        # Items claimed per settlement batch (one transaction). 5k items: ~0.25 s and a few MB
        # with the in-database wallet channel on the reference machine; 1k items cost ~1.5x more
        # per item (per-batch overhead). Payout calls happen between the batch's claim and
        # record transactions, outside both, so an external channel holds no locks while it waits.
        settlement_batch_size=env_int(
            "REFERRAL_SETTLEMENT_BATCH_SIZE", 5000, minimum=1, maximum=100_000
        ),
        # A row a job could not process (referrals.models.FailedItem) is retried after
        # REFERRAL_ITEM_RETRY_SECONDS x 2**(attempts-1) (5, 10, 20, 40 min by default) and held
        # for staff after REFERRAL_ITEM_MAX_ATTEMPTS failed attempts (~75 min after the first).
        item_max_attempts=env_int("REFERRAL_ITEM_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        item_retry_seconds=env_int("REFERRAL_ITEM_RETRY_SECONDS", 300, minimum=1, maximum=86_400),
        payout_channel=env_str("REFERRAL_PAYOUT_CHANNEL", "referrals.payouts.WalletPayout"),
        # A player whose payout failed (or whose outcome is unknown) is retried after
        # base * 2**(failures-1) seconds, capped, times a random factor in [0.8, 1.2).
        payout_retry_seconds=env_int("REFERRAL_PAYOUT_RETRY_SECONDS", 600, minimum=1),
        payout_retry_cap_seconds=env_int("REFERRAL_PAYOUT_RETRY_CAP_SECONDS", 86_400, minimum=1),
        webhook_url=env_str("REFERRAL_PAYOUT_WEBHOOK_URL", ""),
        webhook_secret=env_str("REFERRAL_PAYOUT_WEBHOOK_SECRET", ""),
        webhook_timeout_seconds=env_int(
            "REFERRAL_PAYOUT_WEBHOOK_TIMEOUT", 10, minimum=1, maximum=60
        ),
        retired_variables=tuple(
            name for name in referrals_conf.RETIRED_VARIABLES if name in os.environ
        ),
    )


REFERRALS = referral_settings()


# ---------------------------------------------------------------------------------------------
# Alerts: incidents from the ledger, sent by e-mail (Django's backend above) and/or a webhook
# (monitoring.conf, monitoring.alerts, docs/configuration.md).
# ---------------------------------------------------------------------------------------------
def alert_settings() -> monitoring_conf.AlertSettings:
    emails = env_list("JOBSITE_ALERT_EMAILS", [])
    for address in emails:
        try:
            validate_email(address)
        except ValidationError:
            raise ConfigError(
                f"JOBSITE_ALERT_EMAILS: {address!r} is not an e-mail address "
                "(comma-separated, e.g. ops@example.com,oncall@example.com)"
            ) from None
    webhook = env_str("JOBSITE_ALERT_WEBHOOK_URL", "").strip()
    if webhook:
        webhook = env_url("JOBSITE_ALERT_WEBHOOK_URL", "", schemes=("https", "http"))
        if not urlsplit(webhook).hostname:
            raise ConfigError("JOBSITE_ALERT_WEBHOOK_URL names no host; expected https://host/...")
    return monitoring_conf.AlertSettings(
        emails=tuple(emails),
        webhook_url=webhook,
        failures=env_int("JOBSITE_ALERT_FAILURES", 3, minimum=1, maximum=1000),
        lateness_seconds=env_int("JOBSITE_ALERT_LATENESS_SECONDS", 60, minimum=1, maximum=86_400),
        # Deliveries run on a thread beside beat (monitoring.alerts), so this bounds how long one
        # alert may take, not how long beat waits.
        timeout_seconds=env_int("JOBSITE_ALERT_TIMEOUT_SECONDS", 5, minimum=1, maximum=60),
    )


ALERTS = alert_settings()
