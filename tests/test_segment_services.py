"""Segments on the production services: the lookup cache in Redis, invalidated by a real worker
and, synchronously, by a consent withdrawal.

Run by CI (`make services-test`, PostgreSQL and Redis of the machine); skipped otherwise.
"""

import os
from datetime import timedelta

import orjson
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cdp import apikeys, hooks
from profiles.models import SourceKey
from segments.models import SegmentRun
from segments.services.definitions import segment_create
from segments.services.recompute import segment_recompute
from tests.helpers import wait_until
from tests.segment_helpers import World, definition

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
                       reason="services tests need DATABASE_URL and REDIS_URL (CI sets both)"),
]


def test_lookups_are_cached_in_redis_and_a_worker_invalidates_them(transactional_db, users, client,
                                                                   celery_worker_process, django_assert_num_queries):
    assert settings.CDP_SEGMENT_LOOKUP_CACHE_SECONDS > 0  # on by default with a shared cache
    # No cache.clear(): in CI the cache shares its Redis database with the broker.
    w = World(now=timezone.now())
    anna = w.profile()
    w.identity(anna, "user_id", "u-anna")
    w.consent(anna, personalization=True)
    segment = segment_create(actor=users["alice"], key="viewers", name="Viewers", exposed_source_ids=[w.source.pk],
                             definition=definition({"type": "event", "event": "product_viewed",
                                                    "window": {"last": 1, "unit": "days"},
                                                    "count": {"operator": ">=", "value": 1}}))
    segment_recompute(run_id=SegmentRun.objects.filter(segment=segment).latest("id").pk)
    _, read_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}
    assert client.get("/v1/segments", {"user_id": "u-anna"}, **auth).json() == {"segments": []}
    with django_assert_num_queries(0):  # answered from Redis
        assert client.get("/v1/segments", {"user_id": "u-anna"}, **auth).json() == {"segments": []}
    with transaction.atomic():
        w.event(anna, "product_viewed", timedelta(seconds=1))
        hooks.profiles_changed(profile_ids=[anna], event_names=["product_viewed"])
    wait_until(lambda: client.get("/v1/segments", {"user_id": "u-anna"}, **auth).json() == {"segments": ["viewers"]},
               timeout=20, interval=0.05)


def test_a_withdrawal_through_the_api_excludes_the_person_from_the_very_next_cached_lookup(
        transactional_db, users, client, django_assert_num_queries):
    """No worker runs here: the invalidation happens in the withdrawing request, right after commit."""
    w = World(now=timezone.now())
    anna = w.profile(country="DE")
    w.identity(anna, "anonymous_id", "anon-anna")
    w.consent(anna, personalization=True, email_marketing=True)
    for key, purposes in (("germans", []), ("newsletter", ["email_marketing"])):
        segment = segment_create(actor=users["alice"], key=key, name=key, exposed_source_ids=[w.source.pk],
                                 required_purposes=purposes, definition=definition(
                                     {"type": "trait", "field": "country", "operator": "=", "value": "DE"}))
        segment_recompute(run_id=SegmentRun.objects.filter(segment=segment).latest("id").pk)
    _, read_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    _, write_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.WRITE)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}

    def keys():
        return client.get("/v1/segments", {"anonymous_id": "anon-anna"}, **auth).json()["segments"]

    def withdraw(purpose):
        response = client.post("/v1/consent/withdraw", orjson.dumps({"anonymousId": "anon-anna",
                                                                     "purposes": [purpose]}),
                               content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {write_key}")
        assert response.status_code == 200

    assert keys() == ["germans", "newsletter"]
    with django_assert_num_queries(0):  # answered from Redis
        assert keys() == ["germans", "newsletter"]
    withdraw("email_marketing")
    assert keys() == ["germans"]
    withdraw("personalization")
    assert keys() == []
    with django_assert_num_queries(0):  # the new answer is cached again
        assert keys() == []
