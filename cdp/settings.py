"""Settings for the CDP. Every value comes from the environment (see README, "Configuration").

Without DATABASE_URL an embedded PostgreSQL is started under CDP_DATA_DIR; without a broker URL
Celery uses kombu's filesystem transport under CDP_DATA_DIR. Nothing else differs between a
laptop and production, so there is one settings module and no production-only file.
"""

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from cdp import crypto
from cdp.env import env_bool, env_int, env_list, env_str, local_secret, random_token

BASE_DIR = Path(__file__).resolve().parent.parent
CDP_DATA_DIR = Path(env_str("CDP_DATA_DIR", str(BASE_DIR / ".cdp-data"))).resolve()

DEBUG = env_bool("CDP_DEBUG", False)
SECRET_KEY = env_str("CDP_SECRET_KEY") or local_secret(CDP_DATA_DIR, "secret_key", random_token)
ALLOWED_HOSTS = env_list("CDP_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CDP_CSRF_TRUSTED_ORIGINS")

# Keys for personal data: AES-GCM keys (first encrypts, all decrypt) and the HMAC key used for
# matching. Generated per install when unset; production must set both (check --deploy warns).
CDP_ENCRYPTION_KEYS = env_str("CDP_ENCRYPTION_KEYS") or local_secret(
    CDP_DATA_DIR, "encryption_keys", crypto.generate_key
)
CDP_HASH_KEY = env_str("CDP_HASH_KEY") or local_secret(CDP_DATA_DIR, "hash_key", random_token)
CDP_KEYS_FROM_ENVIRONMENT = bool(env_str("CDP_ENCRYPTION_KEYS") and env_str("CDP_HASH_KEY"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "rules.apps.AutodiscoverRulesConfig",
    "guardian",
    "cdp",
    "profiles",
    "segments",
    "consent",
    "content",
]

AUTHENTICATION_BACKENDS = [
    "rules.permissions.ObjectPermissionBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "cdp.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "cdp.urls"
WSGI_APPLICATION = "cdp.wsgi.application"

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
                "cdp.context_processors.navigation",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
    }


DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    _database = _database_from_url(DATABASE_URL)
else:
    # Host and port are filled in by the backend once the embedded server is up.
    _database = {"ENGINE": "cdp.dbbackend", "NAME": env_str("CDP_DATABASE_NAME", "cdp"), "USER": "postgres",
                 "OPTIONS": {}}
_database.update(
    CONN_MAX_AGE=env_int("CDP_DB_CONN_MAX_AGE", 60, minimum=0),
    CONN_HEALTH_CHECKS=True,
    TEST={"NAME": env_str("CDP_TEST_DATABASE_NAME") or None},
)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "cdp"}}

# Celery: a real broker when one is configured, else the filesystem transport (no server
# process, still a real worker and beat).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
CDP_BROKER_DIR = Path(env_str("CDP_BROKER_DIR", str(CDP_DATA_DIR / "broker"))).resolve()
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CDP_BROKER_DIR / "queue"),
        "data_folder_out": str(CDP_BROKER_DIR / "queue"),
        "control_folder": str(CDP_BROKER_DIR / "control"),
        "store_processed": False,
        # Ingestion -> identity resolution must land within 2 s, so poll often; an empty poll
        # is a directory listing.
        "polling_interval": 0.1,
    }
# Keep Django's JSON logging (and its personal-data filter) in worker and beat too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fix-up closes the database connection before and after every task unless this
# is set (then every 2 x N tasks): each task would pay a new PostgreSQL backend and a cold
# catalog cache, which dominated the small, frequent resolution and real-time tasks. 0 = close
# after every task.
CELERY_DB_REUSE_MAX = env_int("CDP_CELERY_DB_REUSE_MAX", 100, minimum=0)
CELERY_TASK_TIME_LIMIT = env_int("CDP_TASK_TIME_LIMIT", 3600, minimum=10)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(CDP_DATA_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = env_bool("CDP_CELERY_EAGER", False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development and tests serve straight from static/ (no collectstatic step); the production
# image runs collectstatic and sets CDP_STATIC_MANIFEST=1 for hashed, cacheable names.
WHITENOISE_USE_FINDERS = not env_bool("CDP_STATIC_MANIFEST", False)
if WHITENOISE_USE_FINDERS:
    # No collectstatic in development: WhiteNoise serves from the finders, not STATIC_ROOT.
    STATIC_ROOT = None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("CDP_STATIC_MANIFEST", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = Path(env_str("CDP_MEDIA_DIR", str(CDP_DATA_DIR / "media")))

# Security: safe by default where it costs nothing in development; TLS-only switches come from
# the environment (README lists the production values; `check --deploy` passes with them).
SECURE_SSL_REDIRECT = env_bool("CDP_SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("CDP_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("CDP_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CDP_HSTS_INCLUDE_SUBDOMAINS", SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env_bool("CDP_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if env_bool("CDP_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_AGE = env_int("CDP_SESSION_SECONDS", 8 * 3600, minimum=300)
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "cdp.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CDP API",
    "DESCRIPTION": "Staff and client APIs of the customer data platform.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from the installed sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a choice field called "kind": name each enum after its model.
    "ENUM_NAME_OVERRIDES": {"SegmentKindEnum": "segments.models.Segment.Kind"},
}

CDP_LOG_LEVEL = env_str("CDP_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "cdp.logging.RedactPersonalData"}},
    "formatters": {"json": {"()": "cdp.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": CDP_LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pgserver": {"level": "WARNING"},
        "celery": {"level": CDP_LOG_LEVEL},
    },
}

# Phones written without a country code are read in this region (ISO 3166-1 alpha-2), if set.
CDP_DEFAULT_PHONE_REGION = env_str("CDP_DEFAULT_PHONE_REGION", "").upper() or None

# Demo data loaded by `make run` into an empty database.
CDP_DEMO_PROFILES = env_int("CDP_DEMO_PROFILES", 20000, minimum=0)
CDP_DEMO_DAYS = env_int("CDP_DEMO_DAYS", 90, minimum=1)

# --- Consent, privacy and data-subject requests (consent app; README "Configuration") ---------
# Daily signed head hashes of the consent ledger go here; in production point it at storage the
# database's administrators cannot rewrite (a separate volume, a write-once bucket mount).
CDP_CONSENT_HEAD_DIR = Path(env_str("CDP_CONSENT_HEAD_DIR", str(CDP_DATA_DIR / "consent-heads"))).resolve()
CDP_DSR_DUE_DAYS = env_int("CDP_DSR_DUE_DAYS", 30, minimum=1)  # legal deadline of a request
CDP_DSR_FILE_DAYS = env_int("CDP_DSR_FILE_DAYS", 30, minimum=1)  # access exports are deleted after
CDP_RETENTION_BATCH = env_int("CDP_RETENTION_BATCH", 10000, minimum=100)  # rows per retention batch

# --- Ingestion (Segment-compatible collection API, profiles/ingestion/). Sizes are decompressed
# bytes; Segment's own limits are the defaults.
CDP_INGEST_MAX_MESSAGE_BYTES = env_int("CDP_INGEST_MAX_MESSAGE_BYTES", 32 * 1024, minimum=1024)
CDP_INGEST_MAX_BATCH_BYTES = env_int("CDP_INGEST_MAX_BATCH_BYTES", 500 * 1024, minimum=32 * 1024)
CDP_INGEST_MAX_BATCH_MESSAGES = env_int("CDP_INGEST_MAX_BATCH_MESSAGES", 2500, minimum=1)
# Per-source quota (a source may override it); counted in the Django cache, so it holds across
# gunicorn workers and machines only with a shared cache (REDIS_URL).
CDP_INGEST_EVENTS_PER_MINUTE = env_int("CDP_INGEST_EVENTS_PER_MINUTE", 600_000, minimum=1)
# messageId deduplication window (days); rows older than this are purged by beat.
CDP_INGEST_DEDUPE_DAYS = env_int("CDP_INGEST_DEDUPE_DAYS", 14, minimum=7)
# Requests without a usable write key are kept as rejected events up to this many per minute
# (they cannot be attributed, so an unbounded store would be a flooding target).
CDP_INGEST_UNAUTHENTICATED_REJECTS_PER_MINUTE = env_int("CDP_INGEST_UNAUTHENTICATED_REJECTS_PER_MINUTE", 100,
                                                        minimum=0)
# Currency of an Order Completed event that names none (Segment's e-commerce spec assumes USD).
CDP_INGEST_DEFAULT_CURRENCY = env_str("CDP_INGEST_DEFAULT_CURRENCY", "USD").upper()

# --- Segments (issue 5): recompute limits, the lookup cache, webhooks -------------------------
# Hard limit of one full recompute statement; a slower run fails, is retried and shows as failing.
CDP_SEGMENT_RECOMPUTE_TIMEOUT = env_int("CDP_SEGMENT_RECOMPUTE_TIMEOUT", 900, minimum=1)
# Builder preview: exact count up to this long, then an EXPLAIN-based estimate (labelled).
CDP_SEGMENT_PREVIEW_TIMEOUT_MS = env_int("CDP_SEGMENT_PREVIEW_TIMEOUT_MS", 1500, minimum=100)
# Lookup answers are cached only in a cache every process shares (Redis): with the per-process
# default cache, a worker's invalidation could not reach the web processes.
CDP_SEGMENT_LOOKUP_CACHE_SECONDS = env_int("CDP_SEGMENT_LOOKUP_CACHE_SECONDS", 300 if REDIS_URL else 0, minimum=0)
# Webhooks never call loopback, private or link-local addresses, except networks listed here
# (comma-separated CIDRs, e.g. an on-premises 10.20.0.0/16).
CDP_WEBHOOK_ALLOWED_NETWORKS = env_list("CDP_WEBHOOK_ALLOWED_NETWORKS")


def _check_networks(networks: list[str]) -> None:
    import ipaddress

    from django.core.exceptions import ImproperlyConfigured

    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"CDP_WEBHOOK_ALLOWED_NETWORKS: {network!r} is not a network") from None


_check_networks(CDP_WEBHOOK_ALLOWED_NETWORKS)
# --- imports (issue 4): uploaded files, limits and chunking of the import pipeline.
# Uploads are kept under CDP_IMPORT_DIR until the job is deleted; web and worker must share it.
CDP_IMPORT_DIR = Path(env_str("CDP_IMPORT_DIR", str(MEDIA_ROOT / "imports"))).resolve()
CDP_IMPORT_MAX_BYTES = env_int("CDP_IMPORT_MAX_BYTES", 1 << 30, minimum=1024)
CDP_IMPORT_CHUNK_ROWS = env_int("CDP_IMPORT_CHUNK_ROWS", 50_000, minimum=100)
CDP_IMPORT_TIME_LIMIT = env_int("CDP_IMPORT_TIME_LIMIT", 4 * 3600, minimum=60)
# A running import whose worker stopped reporting for this long is marked failed.
CDP_IMPORT_STALE_SECONDS = env_int("CDP_IMPORT_STALE_SECONDS", 600, minimum=30)
# Uploaded files are deleted this many days after their import finished (they are only needed to
# retry; the loaded data lives in the profiles).
CDP_IMPORT_FILE_DAYS = env_int("CDP_IMPORT_FILE_DAYS", 7, minimum=0)
# Memory of the importing database session for its staging (temporary) tables, in MB; beyond it
# they spill to temporary files. PostgreSQL's default (8 MB) makes every pass over a big stage
# read it back from disk.
CDP_IMPORT_TEMP_BUFFERS_MB = env_int("CDP_IMPORT_TEMP_BUFFERS_MB", 512, minimum=1, maximum=65536)
# Memory of each sort and hash of the import's set-based steps (PostgreSQL `work_mem`, SET LOCAL):
# a 1,000,000-line file's joins, groupings and the sort into file order spill to disk below this.
CDP_IMPORT_WORK_MEM_MB = env_int("CDP_IMPORT_WORK_MEM_MB", 256, minimum=1, maximum=65536)
# Identity resolution (profiles/identity/): events per resolver batch (one transaction each),
# how long one task run keeps taking batches before it re-enqueues itself, and the guard rails:
# at most this many user ids per profile, and an anonymous id seen with more user ids than this
# is a shared device (not used for linking). README "Configuration" lists them.
CDP_IDENTITY_BATCH_SIZE = env_int("CDP_IDENTITY_BATCH_SIZE", 50000, minimum=1, maximum=200000)
CDP_IDENTITY_TASK_SECONDS = env_int("CDP_IDENTITY_TASK_SECONDS", 60, minimum=0)  # 0: one batch per run
CDP_IDENTITY_MAX_USER_IDS = env_int("CDP_IDENTITY_MAX_USER_IDS", 1, minimum=1)
CDP_IDENTITY_SHARED_DEVICE_USER_IDS = env_int("CDP_IDENTITY_SHARED_DEVICE_USER_IDS", 3, minimum=1)
