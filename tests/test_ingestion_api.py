"""The Segment-compatible ingestion API through Django's test client on the real database:
routes, auth, bodies, limits, rejections, dedupe, clock skew, orders, quota."""

import base64
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.utils import timezone

from cdp import apikeys
from profiles.ingestion import services
from profiles.models import Event, EventDedupe, RejectedEvent, Source, SourceKey, Transaction, TransactionItem
from tests.ingestion_helpers import grant_analytics

pytestmark = pytest.mark.usefixtures("fresh_ingestion_caches")


@pytest.fixture
def source(db):
    return Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE, allowed_origins=["https://shop.example"])


@pytest.fixture
def write_key(client, source):
    key = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]
    # The site's consent manager has recorded analytics consent for the visitors these tests
    # send as (consent is per person, so it covers every source); test_consent_ingestion.py
    # covers events without it.
    grant_analytics(client, key, user_ids=["u", "u1", "u2", "42", "7"], anonymous_ids=["anon-1", "anon-9", "a", "a1"])
    return key


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


# -- bad input: whole requests -----------------------------------------------------------------

def test_malformed_json_is_400_and_the_raw_body_is_kept(client, source, write_key):
    response = post(client, "/v1/batch", b'{"batch": [{"type": "track",', write_key)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json" and response.json()["message"].startswith("The body is not")
    rejected = RejectedEvent.objects.get()
    assert (rejected.reason, rejected.source_id, rejected.payload, rejected.raw_body) == (
        "invalid_json", source.id, None, '{"batch": [{"type": "track",')
    assert Event.objects.count() == 0


def test_a_json_body_that_is_not_an_object_is_400(client, write_key):
    response = post(client, "/v1/track", b"[1, 2]", write_key)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_json")


def test_a_batch_without_a_list_is_400(client, write_key):
    response = post(client, "/v1/batch", {"batch": {"type": "track"}}, write_key)
    assert (response.status_code, response.json()["code"]) == (400, "missing_batch")
    assert RejectedEvent.objects.get().reason == "missing_batch"


@pytest.mark.parametrize("message, code", [
    ({"event": "X"}, "missing_identifier"),
    ({"event": "X", "userId": "", "anonymousId": None}, "missing_identifier"),
    ({"userId": "u1"}, "missing_event"),
    ({"userId": "u1", "event": ""}, "missing_event"),
    ({"userId": "u1", "event": "X", "properties": "not an object"}, "wrong_type"),
    ({"userId": True, "event": "X"}, "wrong_type"),
    ({"userId": {"id": 1}, "event": "X"}, "wrong_type"),
    ({"userId": "u1", "event": 12}, "wrong_type"),
    ({"userId": "u1", "event": "X", "context": []}, "wrong_type"),
    ({"userId": "u1", "event": "X", "timestamp": 1700000000}, "wrong_type"),
    ({"userId": "u" * 201, "event": "X"}, "value_too_long"),
    ({"userId": "u1", "event": "X", "messageId": "m" * 101}, "value_too_long"),
    ({"userId": "u1", "event": "X\u0000Y"}, "invalid_characters"),
    ({"userId": "u1", "event": "X", "properties": {"a": "b\u0000"}}, "invalid_characters"),
])
def test_an_invalid_single_message_is_400_with_its_reason_and_kept(client, source, write_key, message, code):
    response = post(client, "/v1/track", message, write_key)
    assert response.status_code == 400
    assert response.json()["code"] == code and response.json()["success"] is False
    assert Event.objects.count() == 0
    rejected = RejectedEvent.objects.get()
    assert (rejected.reason, rejected.source_id, rejected.endpoint, rejected.batch_index) == (
        code, source.id, "track", None)
    assert orjson.loads(rejected.payload) == message


@pytest.mark.parametrize("path, message, code", [
    ("/v1/alias", {"userId": "u2"}, "missing_previous_id"),
    ("/v1/alias", {"previousId": "u1", "anonymousId": "a"}, "missing_user_id"),
    ("/v1/group", {"userId": "u1"}, "missing_group_id"),
    ("/v1/identify", {"traits": {"plan": "pro"}}, "missing_identifier"),
])
def test_per_type_rules(client, write_key, path, message, code):
    response = post(client, path, message, write_key)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert Event.objects.count() == 0


def test_a_message_over_32_kb_is_413(client, write_key):
    message = track(properties={"blob": "x" * 33_000})
    response = post(client, "/v1/track", message, write_key)
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")
    rejected = RejectedEvent.objects.get()
    assert rejected.truncated is False and rejected.size_bytes > 32 * 1024
    assert Event.objects.count() == 0


def test_a_batch_over_500_kb_is_413_and_its_beginning_kept(client, write_key):
    batch = [track(properties={"blob": "x" * 20_000}) for _ in range(30)]
    response = post(client, "/v1/batch", {"batch": batch}, write_key)
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")
    rejected = RejectedEvent.objects.get()
    assert rejected.truncated is True and rejected.size_bytes > 500 * 1024
    assert len(rejected.raw_body) == 64 * 1024
    assert Event.objects.count() == 0


def test_a_batch_over_2500_messages_is_413(client, write_key):
    batch = [{"type": "track", "event": "E", "userId": "u"} for _ in range(2501)]
    response = post(client, "/v1/batch", {"batch": batch}, write_key)
    assert (response.status_code, response.json()["code"]) == (413, "batch_too_many_messages")
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.get().reason == "batch_too_many_messages"
    batch.pop()
    assert post(client, "/v1/batch", {"batch": batch}, write_key).status_code == 200
    assert Event.objects.count() == 2500


def test_gzip_bodies_are_decompressed(client, write_key):
    body = gzip.compress(orjson.dumps({"batch": [track(messageId="gz-1"), track(messageId="gz-2")]}))
    response = post(client, "/v1/batch", body, write_key, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["gz-1", "gz-2"]


def test_a_gzip_bomb_is_refused_without_being_expanded(client, write_key):
    bomb = gzip.compress(b'{"batch": [' + b" " * (200 * 1024 * 1024) + b"]}", compresslevel=9)
    assert len(bomb) < 300 * 1024
    response = post(client, "/v1/batch", bomb, write_key, HTTP_CONTENT_ENCODING="gzip")
    assert (response.status_code, response.json()["code"]) == (413, "request_too_large")
    assert "decompressed" in response.json()["message"]
    rejected = RejectedEvent.objects.get()
    assert rejected.truncated is True and len(rejected.raw_body) == 64 * 1024


def test_a_gzip_body_whose_output_is_a_little_too_large_is_413(client, write_key):
    batch = [track(properties={"blob": "y" * 30_000}) for _ in range(20)]  # ~600 KB, compresses well
    response = post(client, "/v1/batch", gzip.compress(orjson.dumps({"batch": batch})), write_key,
                    HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert Event.objects.count() == 0


@pytest.mark.parametrize("body, encoding, status, code", [
    (b"\x1f\x8b not really gzip", "gzip", 400, "invalid_encoding"),
    (gzip.compress(b'{"batch": []}')[:-6], "gzip", 400, "invalid_encoding"),
    (b"{}", "br", 415, "unsupported_encoding"),
])
def test_broken_or_unknown_encodings_are_4xx(client, write_key, body, encoding, status, code):
    response = post(client, "/v1/batch", body, write_key, HTTP_CONTENT_ENCODING=encoding)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_any_content_type_is_parsed_as_json(client, write_key):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream"):
        response = post(client, "/v1/track", track(), write_key, content_type=content_type)
        assert response.status_code == 200, content_type
    assert Event.objects.count() == 3


# -- bad input inside a batch ------------------------------------------------------------------

def test_a_mixed_batch_stores_the_valid_and_rejects_the_invalid_with_their_index(client, source, write_key):
    batch = [
        track(messageId="ok-0"),
        {"type": "track", "userId": "u1", "messageId": "bad-1"},  # no event
        "not an object",
        track(messageId="ok-3", userId=7, anonymousId=None),
        {"type": "shout", "userId": "u1", "messageId": "bad-4"},
        {"event": "E", "userId": "u1", "messageId": "bad-5"},  # no type
        track(messageId="bad-6", properties={"blob": "z" * 33_000}),
        track(messageId="ok-7", event="Signed Up"),
    ]
    body = {"batch": batch, "sentAt": "2026-11-22T15:12:40Z", "writeKey": write_key}
    response = post(client, "/v1/batch", body)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["ok-0", "ok-3", "ok-7"]
    rejected = list(RejectedEvent.objects.order_by("batch_index").values_list("batch_index", "reason", "source_id"))
    assert rejected == [(1, "missing_event", source.id), (2, "wrong_type", source.id), (4, "invalid_type", source.id),
                        (5, "missing_type", source.id), (6, "message_too_large", source.id)]
    first = orjson.loads(RejectedEvent.objects.get(batch_index=1).payload)
    # Self-contained for replay: the batch's sentAt travels with the item.
    assert first == {"type": "track", "userId": "u1", "messageId": "bad-1", "sentAt": "2026-11-22T15:12:40Z"}


def test_a_batch_of_only_invalid_messages_is_still_200(client, write_key):
    response = post(client, "/v1/batch", {"batch": [{"type": "track"}, {"type": "track"}]}, write_key)
    assert response.status_code == 200
    assert (Event.objects.count(), RejectedEvent.objects.count()) == (0, 2)


# -- duplicates ----------------------------------------------------------------------------------

def test_a_retried_batch_stores_nothing_twice(client, write_key):
    batch = [track(messageId="r-1"), track(messageId="r-2")]
    for _ in range(3):
        response = post(client, "/v1/batch", {"batch": batch}, write_key, HTTP_X_RETRY_COUNT="1")
        assert (response.status_code, response.json()) == (200, {"success": True})
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["r-1", "r-2"]


def test_duplicates_inside_one_batch_are_stored_once(client, write_key):
    batch = [track(messageId="d-1", event="First"), track(messageId="d-1", event="Second")]
    assert post(client, "/v1/batch", {"batch": batch}, write_key).status_code == 200
    assert list(Event.objects.values_list("name", flat=True)) == ["First"]


def test_the_same_message_id_from_two_sources_is_two_events(client, source, write_key):
    other = Source.objects.create(name="App", kind=Source.Kind.APP)
    other_key = apikeys.source_key_create(source=other, kind=SourceKey.Kind.WRITE)[1]
    assert post(client, "/v1/track", track(messageId="same"), write_key).status_code == 200
    assert post(client, "/v1/track", track(messageId="same"), other_key).status_code == 200
    assert sorted(Event.objects.values_list("source_id", flat=True)) == sorted([source.id, other.id])


def test_the_dedupe_window_is_purged_after_its_days_only(client, source, write_key, settings):
    assert post(client, "/v1/track", track(messageId="old-id"), write_key).status_code == 200
    assert post(client, "/v1/track", track(messageId="new-id"), write_key).status_code == 200
    EventDedupe.objects.filter(message_id="old-id").update(
        first_received_at=timezone.now() - timedelta(days=settings.CDP_INGEST_DEDUPE_DAYS, minutes=1))
    EventDedupe.objects.filter(message_id="new-id").update(
        first_received_at=timezone.now() - timedelta(days=settings.CDP_INGEST_DEDUPE_DAYS - 1))
    deleted, more = services.event_dedupe_purge(batch_size=1, max_batches=5)
    assert (deleted, more) == (1, False)
    assert list(EventDedupe.objects.values_list("message_id", flat=True)) == ["new-id"]
    assert settings.CDP_INGEST_DEDUPE_DAYS >= 7


# -- orders --------------------------------------------------------------------------------------

def order(**properties) -> dict:
    base = {"order_id": "O-1", "total": 27.5, "revenue": 25, "currency": "eur",
            "products": [{"product_id": "SKU-1", "name": "Socks", "category": "Apparel", "price": 5, "quantity": 3},
                         {"sku": "SKU-2", "category": "Shoes", "price": "12.50"}]}
    base.update(properties)
    return track(event="Order Completed", userId="u1", properties=base)


def test_order_completed_creates_a_transaction_with_items(client, source, write_key):
    assert post(client, "/v1/track", order(), write_key).status_code == 200
    transaction = Transaction.objects.get()
    event = Event.objects.get()
    assert (transaction.source_id, transaction.order_id, transaction.profile_id, transaction.amount,
            transaction.currency, transaction.channel, transaction.timestamp) == (
        source.id, "O-1", None, Decimal("27.50"), "EUR", "web", event.timestamp)
    items = list(TransactionItem.objects.order_by("product_sku").values_list(
        "product_sku", "product_name", "category", "price", "quantity"))
    assert items == [("SKU-1", "Socks", "Apparel", Decimal("5.00"), 3), ("SKU-2", "", "Shoes", Decimal("12.50"), 1)]
    # The resolver finds the transaction through the event's (source_id, properties.order_id).
    assert (event.source_id, event.properties["order_id"]) == (transaction.source_id, transaction.order_id)


def test_snake_case_order_completed_and_revenue_and_default_currency(client, write_key, settings):
    settings.CDP_INGEST_DEFAULT_CURRENCY = "USD"
    message = order(total=None, currency=None, order_id=991)
    message["event"] = "order_completed"
    assert post(client, "/v1/track", message, write_key).status_code == 200
    assert Transaction.objects.values_list("order_id", "amount", "currency").get() == ("991", Decimal("25.00"), "USD")


def test_an_order_is_created_once_across_retries_and_message_ids(client, write_key):
    first = order(order_id="O-7")
    assert post(client, "/v1/batch", {"batch": [first]}, write_key).status_code == 200
    assert post(client, "/v1/batch", {"batch": [first]}, write_key).status_code == 200
    assert post(client, "/v1/track", order(order_id="O-7"), write_key).status_code == 200  # new messageId
    assert Transaction.objects.count() == 1
    assert TransactionItem.objects.count() == 2
    assert Event.objects.count() == 2


def test_an_invalid_order_keeps_the_event_and_rejects_the_transaction(client, source, write_key):
    response = post(client, "/v1/track", order(order_id=None), write_key)
    assert response.status_code == 200
    assert (Event.objects.count(), Transaction.objects.count()) == (1, 0)
    rejected = RejectedEvent.objects.get()
    assert rejected.reason == "invalid_order" and "order_id is required" in rejected.message


@pytest.mark.parametrize("properties, fragment", [
    ({"total": "lots"}, "total must be a number"),
    ({"currency": "EURO"}, "currency must be"),
    ({"products": "none"}, "products must be a list"),
    ({"products": [{"price": 1, "quantity": -1}]}, "products[0].quantity"),
    ({"products": [{"price": True}]}, "products[0].price"),
    ({"total": "1" * 40}, "total must be a number"),
    ({"total": 1e13}, "total is out of range"),
])
def test_order_field_errors_are_named(client, write_key, properties, fragment):
    assert post(client, "/v1/track", order(**properties), write_key).status_code == 200
    assert fragment in RejectedEvent.objects.get().message
    assert Transaction.objects.count() == 0


def test_an_order_with_a_nul_character_is_rejected_whole(client, write_key):
    response = post(client, "/v1/track", order(order_id="O-\u0000"), write_key)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_characters")
    assert (Event.objects.count(), Transaction.objects.count()) == (0, 0)


# -- quota ---------------------------------------------------------------------------------------

def test_above_the_source_quota_requests_get_429_with_retry_after(client, source, write_key):
    Source.objects.filter(pk=source.pk).update(events_per_minute_limit=5)
    services.source_cache_clear()
    now = timezone.now()
    if now.second >= 55:  # keep the three requests inside one quota minute
        import time

        time.sleep(61 - now.second)
    assert post(client, "/v1/batch", {"batch": [track() for _ in range(3)]}, write_key).status_code == 200
    refused = post(client, "/v1/batch", {"batch": [track() for _ in range(3)]}, write_key)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Refused messages do not use up the quota; nothing of them was stored (the client retries).
    assert post(client, "/v1/batch", {"batch": [track() for _ in range(2)]}, write_key).status_code == 200
    assert (Event.objects.count(), RejectedEvent.objects.count()) == (5, 0)


# -- CORS and analytics.js settings --------------------------------------------------------------

def test_preflight_answers_with_the_requested_headers(client, db):
    response = client.options("/v1/t", HTTP_ORIGIN="https://shop.example",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                              HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,x-retry-count")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert response["Access-Control-Allow-Headers"] == "authorization,content-type,x-retry-count"
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert response["Vary"] == "Origin"


def test_posts_from_an_allowed_origin_get_cors_headers(client, write_key):
    response = post(client, "/v1/t", track(writeKey=write_key), content_type="text/plain",
                    HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


def test_posts_from_another_origin_are_403_and_kept_for_replay(client, source, write_key):
    response = post(client, "/v1/t", track(writeKey=write_key), content_type="text/plain",
                    HTTP_ORIGIN="https://evil.example")
    assert (response.status_code, response.json()["code"]) == (403, "origin_not_allowed")
    # The browser may read the refusal (so it does not retry in a loop).
    assert response["Access-Control-Allow-Origin"] == "https://evil.example"
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.values_list("reason", "source_id").get() == ("origin_not_allowed", source.id)


def test_a_wildcard_origin_allows_every_browser(client, source, write_key):
    Source.objects.filter(pk=source.pk).update(allowed_origins=["*"])
    services.source_cache_clear()
    response = post(client, "/v1/t", track(writeKey=write_key), HTTP_ORIGIN="https://anywhere.example")
    assert response.status_code == 200


def test_settings_for_analytics_js(client, write_key):
    response = client.get(f"/v1/projects/{write_key}/settings", HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 200
    segment = response.json()["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (write_key, "testserver/v1", "http")
    assert list(response.json()["integrations"]) == ["Segment.io"]
    assert response.json()["metrics"] == {"sampleRate": 0}
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


def test_settings_for_an_unknown_key_is_404(client, db):
    response = client.get("/v1/projects/wk_unknown/settings")
    assert (response.status_code, response.json()["code"]) == (404, "invalid_write_key")
