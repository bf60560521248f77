"""The Segment-compatible ingestion API through Django's test client on the real database:
routes, auth, bodies, limits, rejections, dedupe, clock skew, orders, quota."""

import base64
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.core.cache import cache
from django.utils import timezone

from cdp import apikeys
from profiles.ingestion import services
from profiles.models import Event, EventDedupe, RejectedEvent, Source, SourceKey, Transaction, TransactionItem


@pytest.fixture(autouse=True)
def _fresh_caches():
    cache.clear()
    apikeys._cache.clear()
    services.source_cache_clear()


@pytest.fixture
def source(db):
    return Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE, allowed_origins=["https://shop.example"])


@pytest.fixture
def write_key(source):
    return apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def track(**overrides) -> dict:
    message = {"type": "track", "event": "Product Viewed", "anonymousId": "anon-1", "userId": None,
               "messageId": str(uuid.uuid4()), "timestamp": "2026-11-22T15:12:38.355+00:00",
               "properties": {"sku": "A1", "price": 12.5}, "context": {"library": {"name": "analytics-python"}},
               "integrations": {}}
    message.update(overrides)
    return message


def post(client, path, body, key=None, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    if key:
        headers["HTTP_AUTHORIZATION"] = basic(key)
    return client.generic("POST", path, data, content_type=headers.pop("content_type", "application/json"),
                          **headers)


def counts() -> tuple[int, int, int]:
    return Event.objects.count(), RejectedEvent.objects.count(), Transaction.objects.count()


# -- routes and success ------------------------------------------------------------------------

def test_a_batch_is_stored_and_answered_with_exactly_success_true(client, source, write_key):
    batch = [track(messageId="m-1"), track(messageId="m-2", event="Cart Viewed", userId=42)]
    response = post(client, "/v1/batch", {"batch": batch, "sentAt": "2026-11-22T15:12:38.456368+00:00"}, write_key)
    assert response.status_code == 200
    assert response.content == b'{"success":true}'
    assert response["Content-Type"] == "application/json"
    rows = list(Event.objects.order_by("message_id").values("message_id", "type", "name", "anonymous_id", "user_id",
                                                               "source_id", "profile_id", "properties"))
    assert rows == [
        {"message_id": "m-1", "type": "track", "name": "Product Viewed", "anonymous_id": "anon-1", "user_id": "",
         "source_id": source.id, "profile_id": None, "properties": {"sku": "A1", "price": 12.5}},
        {"message_id": "m-2", "type": "track", "name": "Cart Viewed", "anonymous_id": "anon-1", "user_id": "42",
         "source_id": source.id, "profile_id": None, "properties": {"sku": "A1", "price": 12.5}},
    ]
    assert EventDedupe.objects.filter(source=source).count() == 2


@pytest.mark.parametrize("path, kind", [
    ("/v1/identify", "identify"), ("/v1/track", "track"), ("/v1/page", "page"), ("/v1/screen", "screen"),
    ("/v1/group", "group"), ("/v1/alias", "alias"), ("/v1/i", "identify"), ("/v1/t", "track"), ("/v1/p", "page"),
    ("/v1/s", "screen"), ("/v1/g", "group"), ("/v1/a", "alias")])
def test_single_message_routes_take_the_type_from_the_path(client, write_key, path, kind):
    message = {"userId": "u1", "previousId": "anon-9", "groupId": "g1", "event": "Clicked", "name": "Home",
               "messageId": f"m-{kind}", "type": "track"}
    response = post(client, path, message, write_key)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert list(Event.objects.values_list("type", "message_id")) == [(kind, f"m-{kind}")]


def test_import_and_browser_batch_routes_take_the_batch_body(client, write_key):
    assert post(client, "/v1/import", {"batch": [track(messageId="i-1")]}, write_key).status_code == 200
    assert post(client, "/v1/b", {"batch": [track(messageId="b-1")], "writeKey": write_key}).status_code == 200
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["b-1", "i-1"]


def test_browser_metrics_are_accepted_and_ignored(client, db):
    response = client.generic("POST", "/v1/m", b'{"series":[{"type":"Counter"}]}', content_type="text/plain")
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert counts() == (0, 0, 0)


def test_get_on_an_ingestion_route_is_a_json_405(client, db):
    response = client.get("/v1/batch")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_no_trailing_slash_needed_and_none_redirected(client, write_key):
    for path in ("/v1/track", "/v1/track/"):
        response = post(client, path, track(), write_key)
        assert response.status_code == 200, path
    assert Event.objects.count() == 2


# -- storage contract --------------------------------------------------------------------------

def test_identify_merges_top_level_traits_over_context_traits(client, write_key):
    message = {"userId": "u1", "anonymousId": "a1", "messageId": "id-1", "traits": {"plan": "pro", "email": "x@y.z"},
               "context": {"traits": {"plan": "free", "name": "Ann"}}}
    assert post(client, "/v1/identify", message, write_key).status_code == 200
    event = Event.objects.get()
    assert event.traits == {"plan": "pro", "email": "x@y.z", "name": "Ann"}
    assert event.context == {"traits": {"plan": "free", "name": "Ann"}}


def test_rudder_identify_with_only_context_traits_keeps_them(client, write_key):
    message = {"userId": "u1", "messageId": "id-2", "context": {"traits": {"plan": "pro"}}, "channel": "server",
               "integrations": {"All": True}}
    assert post(client, "/v1/identify", message, write_key).status_code == 200
    event = Event.objects.get()
    assert event.traits == {"plan": "pro"}
    assert event.extra == {"channel": "server", "integrations": {"All": True}}


def test_group_alias_page_columns(client, write_key):
    batch = [
        {"type": "group", "userId": "u1", "groupId": 77, "traits": {"name": "ACME"}, "messageId": "g"},
        {"type": "alias", "userId": "u2", "previousId": "u1", "anonymousId": None, "messageId": "a"},
        {"type": "page", "anonymousId": "a1", "name": "Home", "category": "Docs", "messageId": "p",
         "properties": {"url": "https://x/"}},
        {"type": "screen", "anonymousId": "a1", "name": "Cart", "category": None, "messageId": "s"},
    ]
    assert post(client, "/v1/batch", {"batch": batch}, write_key).status_code == 200
    rows = {e.message_id: e for e in Event.objects.all()}
    assert (rows["g"].group_id, rows["g"].traits, rows["g"].name) == ("77", {"name": "ACME"}, "")
    assert (rows["a"].user_id, rows["a"].previous_id, rows["a"].anonymous_id) == ("u2", "u1", "")
    assert (rows["p"].name, rows["p"].category, rows["p"].properties) == ("Home", "Docs", {"url": "https://x/"})
    assert (rows["s"].name, rows["s"].category, rows["s"].traits) == ("Cart", "", {})


def test_extra_keeps_integrations_and_unknown_keys_but_never_the_write_key(client, write_key):
    message = track(messageId="x-1", _metadata={"bundled": ["Segment.io"]}, version=2,
                    integrations={"Segment.io": True}, writeKey=write_key)
    assert post(client, "/v1/t", message, content_type="text/plain").status_code == 200
    assert Event.objects.get().extra == {"_metadata": {"bundled": ["Segment.io"]}, "version": 2,
                                         "integrations": {"Segment.io": True}}


def test_envelope_context_and_integrations_merge_into_every_item(client, write_key):
    body = {"batch": [track(messageId="e-1", context={"locale": "de"}), track(messageId="e-2", context=None)],
            "context": {"library": {"name": "lib"}, "locale": "en"}, "integrations": {"All": False}}
    assert post(client, "/v1/batch", body, write_key).status_code == 200
    rows = {e.message_id: e for e in Event.objects.all()}
    assert rows["e-1"].context == {"library": {"name": "lib"}, "locale": "de"}
    assert rows["e-2"].context == {"library": {"name": "lib"}, "locale": "en"}
    assert rows["e-1"].extra == {"integrations": {"All": False}}


def test_clock_skew_correction_keeps_original_timestamp_verbatim(client, write_key):
    before = timezone.now()
    # The device clock is 1 h 10 s behind: sentAt - originalTimestamp = 1.5 s is the only truth.
    message = track(messageId="skew", timestamp="2026-01-01T10:00:00.000+01:00",
                    sentAt="2026-01-01T09:00:01.500Z")
    assert post(client, "/v1/track", message, write_key).status_code == 200
    after = timezone.now()
    event = Event.objects.get()
    assert event.original_timestamp == "2026-01-01T10:00:00.000+01:00"
    assert event.sent_at == datetime(2026, 1, 1, 9, 0, 1, 500000, tzinfo=UTC)
    assert before <= event.received_at <= after
    assert event.timestamp == event.received_at - timedelta(seconds=1.5)


def test_clock_skew_uses_the_batch_sent_at_and_falls_back_on_bad_dates(client, write_key):
    body = {"batch": [track(messageId="k-1", timestamp="2026-11-22T15:00:00+00:00"),
                      track(messageId="k-2", timestamp="2015-2-02T00:30:08.276Z"),
                      track(messageId="k-3", timestamp=None)],
            "sentAt": "2026-11-22T15:00:02+00:00"}
    assert post(client, "/v1/batch", body, write_key).status_code == 200
    rows = {e.message_id: e for e in Event.objects.all()}
    assert rows["k-1"].timestamp == rows["k-1"].received_at - timedelta(seconds=2)
    assert rows["k-1"].sent_at == datetime(2026, 11, 22, 15, 0, 2, tzinfo=UTC)
    assert rows["k-2"].original_timestamp == "2015-2-02T00:30:08.276Z"
    assert rows["k-2"].timestamp == rows["k-2"].received_at
    assert (rows["k-3"].original_timestamp, rows["k-3"].timestamp) == (None, rows["k-3"].received_at)


def test_historic_events_land_in_the_default_partition(client, write_key):
    message = track(messageId="old", timestamp="2001-05-05T00:00:00Z", sentAt=None)
    assert post(client, "/v1/track", message, write_key).status_code == 200
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_event_default WHERE message_id = 'old'")
        assert cursor.fetchone()[0] == 1


def test_a_missing_message_id_is_generated(client, write_key):
    message = track()
    del message["messageId"]
    assert post(client, "/v1/track", message, write_key).status_code == 200
    assert Event.objects.get().message_id.startswith("srv-")


# -- authentication ----------------------------------------------------------------------------

def test_body_only_write_key_is_accepted(client, write_key):
    response = post(client, "/v1/batch", {"batch": [track()], "writeKey": write_key})
    assert response.status_code == 200
    assert Event.objects.count() == 1


@pytest.mark.parametrize("auth, body_key, code", [
    (None, None, "missing_write_key"),
    ("Basic " + base64.b64encode(b"wk_wrong:").decode(), None, "invalid_write_key"),
    (None, "wk_wrong", "invalid_write_key"),
    ("Basic !!!not-base64", None, "missing_write_key"),
])
def test_missing_and_bad_keys_are_401_with_code_and_message(client, source, auth, body_key, code):
    body = {"batch": [track()]} | ({"writeKey": body_key} if body_key else {})
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    response = post(client, "/v1/batch", body, **headers)
    assert response.status_code == 401
    assert response.json()["code"] == code and response.json()["message"]
    assert Event.objects.count() == 0
    rejected = RejectedEvent.objects.get()
    assert (rejected.reason, rejected.source_id, rejected.batch_index) == (code, None, None)
    assert orjson.loads(rejected.payload)["batch"][0]["messageId"] == body["batch"][0]["messageId"]


def test_revoked_and_expired_keys_are_refused(client, source):
    revoked, revoked_raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    expired, expired_raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    apikeys.source_key_revoke(key=revoked)
    SourceKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    apikeys._cache.clear()
    for raw in (revoked_raw, expired_raw):
        response = post(client, "/v1/track", track(), raw)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_write_key")
    assert Event.objects.count() == 0
    assert list(RejectedEvent.objects.values_list("key_prefix", flat=True)) == [expired_raw[:10], revoked_raw[:10]]


def test_a_read_key_cannot_write(client, source):
    _, read_raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.READ)
    assert post(client, "/v1/track", track(), read_raw).status_code == 401
    assert Event.objects.count() == 0


def test_stored_rejections_never_keep_the_write_key(client, write_key):
    response = post(client, "/v1/track", {"writeKey": write_key, "event": "X"})  # no identifier
    assert response.status_code == 400
    payload = RejectedEvent.objects.get().payload
    assert write_key not in payload and orjson.loads(payload) == {"event": "X"}


def test_unattributable_rejections_are_capped_per_minute(client, db, settings):
    settings.CDP_INGEST_UNAUTHENTICATED_REJECTS_PER_MINUTE = 2
    for _ in range(4):
        assert post(client, "/v1/track", track(), "wk_nobody").status_code == 401
    assert RejectedEvent.objects.count() == 2


def test_last_used_at_of_the_key_is_kept_current(client, source, write_key):
    assert post(client, "/v1/track", track(), write_key).status_code == 200
    assert SourceKey.objects.get(source=source).last_used_at is not None
