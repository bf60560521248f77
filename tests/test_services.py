"""The production configuration: PostgreSQL from DATABASE_URL, Redis as broker and cache.

Run by CI (`make services-test`) against the machine's real servers; skipped otherwise.
"""

import os
import time
import uuid

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction

from profiles import partitions
from profiles.tasks import event_partitions_ensure_task
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
                       reason="services tests need DATABASE_URL and REDIS_URL (CI sets both)"),
]


def test_settings_follow_the_environment():
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    expected_broker = os.environ.get("CELERY_BROKER_URL") or os.environ["REDIS_URL"]
    assert settings.CELERY_BROKER_URL == expected_broker
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"


def test_the_database_is_the_configured_server(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version_num')::int")
        assert cursor.fetchone()[0] >= 150000


def test_redis_cache_round_trip():
    key = f"services-test-{uuid.uuid4()}"
    cache.set(key, {"n": 1}, 30)
    assert cache.get(key) == {"n": 1}
    cache.delete(key)


def test_healthz_reports_redis_broker(client, db):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_a_real_worker_consumes_from_redis(celery_worker_process):
    wanted = {"profiles_event_y2046m03", "profiles_event_y2046m04"}
    with transaction.atomic():
        transaction.on_commit(lambda: event_partitions_ensure_task.delay(months_ahead=1, today="2046-03-10"))
    wait_until(lambda: wanted <= partitions.existing_partitions(), timeout=30)


def test_queued_flags_live_in_redis_and_expire():
    from cdp import flags

    name = "cdp:test:services-flag"
    flags.flag_clear(name)
    assert flags.flag_set_once(name, ttl=1) is True
    assert flags.flag_set_once(name, ttl=1) is False
    flags.flag_clear(name)
    assert flags.flag_set_once(name, ttl=1) is True
    time.sleep(1.2)  # a lost message's flag expires
    assert flags.flag_set_once(name, ttl=1) is True
    flags.flag_clear(name)
