"""Deployment checks for what Django's own `check --deploy` cannot know about."""

from django.conf import settings
from django.core.checks import Warning, register


@register(deploy=True)
def personal_data_keys(app_configs, **kwargs):
    if settings.CDP_KEYS_FROM_ENVIRONMENT:
        return []
    return [Warning(
        "Encryption and hash keys for personal data were generated into CDP_DATA_DIR.",
        hint="Set CDP_ENCRYPTION_KEYS and CDP_HASH_KEY in the environment, the same on every machine.",
        id="cdp.W001",
    )]


@register(deploy=True)
def production_broker(app_configs, **kwargs):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return []
    return [Warning(
        "Celery uses the filesystem broker, which only works on a single machine.",
        hint="Set CELERY_BROKER_URL or REDIS_URL.",
        id="cdp.W002",
    )]


@register(deploy=True)
def production_database(app_configs, **kwargs):
    if settings.DATABASE_URL:
        return []
    return [Warning("The embedded PostgreSQL is meant for development.", hint="Set DATABASE_URL.", id="cdp.W003")]
