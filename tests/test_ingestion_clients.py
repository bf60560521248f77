"""Real tracking libraries against a live server: segment-analytics-python, rudder-sdk-python,
plain `requests` as segment-python 2.3.x and old analytics.js send, and analytics.js' shapes.

The live server commits, so these tests are transactional; what they read back was stored by
another thread's connection after its commit, as any client would see it.
"""

import concurrent.futures
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests
from django.db import connections

from cdp import apikeys
from profiles.models import Event, RejectedEvent, Source, SourceKey, Transaction
from tests.ingestion_helpers import grant_analytics

pytestmark = pytest.mark.usefixtures("fresh_ingestion_caches")


@pytest.fixture(autouse=True)
def _no_persistent_connections_in_handler_threads():
    """The libraries keep HTTP connections alive, and the live server gives each one a thread
    that lives as long as it does; with persistent database connections (CONN_MAX_AGE) such a
    thread would keep a database session open after the test. Close them per request here."""
    database = connections.settings["default"]
    previous = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    yield
    database["CONN_MAX_AGE"] = previous


@pytest.fixture
def source(transactional_db):
    return Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE, allowed_origins=["http://shop.localhost"])


@pytest.fixture
def write_key(source, client):
    key = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]
    # The site's consent manager recorded analytics consent for the visitors these tests send as
    # (test_consent_ingestion.py sends the consent context with the library itself).
    grant_analytics(client, key, user_ids=["u-1", "u-9", "u-3", "u1", "u-c"],
                    anonymous_ids=["anon-1", "anon-2", "fdb9f691", "a-1"])
    return key


WHEN = datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=UTC)


def _assert_time(event, sent: str):
    assert event.original_timestamp == sent
    # Skew correction moves it by the network latency only.
    assert abs(event.timestamp - datetime.fromisoformat(sent)) < timedelta(seconds=5)


def test_segment_analytics_python_calls_are_stored_as_the_right_events(live_server, source, write_key):
    from segment.analytics.client import Client

    errors = []
    client = Client(write_key, host=live_server.url, on_error=lambda error, batch: errors.append(error),
                    max_retries=1)
    client.identify("u-1", {"email": "ann@example.com", "plan": "pro"}, anonymous_id="anon-1", timestamp=WHEN,
                    message_id="seg-identify")
    client.track("u-1", "Product Viewed", {"sku": "A-1", "price": 9.5}, timestamp=WHEN, message_id="seg-track")
    client.page("u-1", "Docs", "Install", {"url": "https://shop/docs"}, timestamp=WHEN, message_id="seg-page")
    client.screen("u-1", "App", "Cart", {"items": 2}, timestamp=WHEN, message_id="seg-screen")
    client.group("u-1", "acme", {"name": "ACME"}, timestamp=WHEN, message_id="seg-group")
    client.alias("anon-1", "u-1", timestamp=WHEN, message_id="seg-alias")
    client.track(anonymous_id="anon-2", event="Order Completed", timestamp=WHEN, message_id="seg-order",
                 properties={"order_id": "SO-1", "total": 30, "currency": "EUR",
                             "products": [{"product_id": "A-1", "category": "Books", "price": 10, "quantity": 3}]})
    client.flush()
    client.join()
    assert errors == []
    rows = {e.message_id: e for e in Event.objects.all()}
    assert set(rows) == {"seg-identify", "seg-track", "seg-page", "seg-screen", "seg-group", "seg-alias", "seg-order"}
    sent = "2026-11-20T10:00:00.123+00:00"  # segment-python: milliseconds
    for event in rows.values():
        assert (event.source_id, event.profile_id) == (source.id, None)
        _assert_time(event, sent)
        assert event.context["library"]["name"] == "analytics-python"
        assert event.sent_at is not None
    identify = rows["seg-identify"]
    assert (identify.type, identify.user_id, identify.anonymous_id, identify.traits) == (
        "identify", "u-1", "anon-1", {"email": "ann@example.com", "plan": "pro"})
    assert (rows["seg-track"].type, rows["seg-track"].name, rows["seg-track"].properties) == (
        "track", "Product Viewed", {"sku": "A-1", "price": 9.5})
    assert (rows["seg-page"].type, rows["seg-page"].category, rows["seg-page"].name) == ("page", "Docs", "Install")
    assert (rows["seg-screen"].type, rows["seg-screen"].name, rows["seg-screen"].properties) == (
        "screen", "Cart", {"items": 2})
    assert (rows["seg-group"].type, rows["seg-group"].group_id, rows["seg-group"].traits) == (
        "group", "acme", {"name": "ACME"})
    assert (rows["seg-alias"].type, rows["seg-alias"].previous_id, rows["seg-alias"].user_id) == (
        "alias", "anon-1", "u-1")
    transaction = Transaction.objects.get()
    assert (transaction.order_id, str(transaction.amount), transaction.currency, transaction.items.count()) == (
        "SO-1", "30.00", "EUR", 1)


def test_segment_python_gets_a_final_401_for_a_bad_key(live_server, source):
    from segment.analytics.client import Client

    errors = []
    client = Client("wk_not_a_key", host=live_server.url, max_retries=2,
                    on_error=lambda error, batch: errors.append(error))
    client.track("u-1", "Clicked", message_id=str(uuid.uuid4()))
    client.flush()
    client.join()
    assert [(e.status, e.code) for e in errors] == [(401, "invalid_write_key")]
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.count() == 1  # one request: 401 is not retried


def test_segment_python_sync_mode_sees_codes_and_batches_keep_their_valid_messages(live_server, write_key):
    from segment.analytics.client import Client
    from segment.analytics.request import APIError

    client = Client(write_key, host=live_server.url, sync_mode=True)
    client.track("u-1", "Clicked", {"n": 1}, message_id="sync-ok")
    # Valid for the library, too long for us: inside a batch it is rejected with its index, and
    # the answer stays 200 so the library does not resend the batch.
    client.track("u" * 250, "Clicked", message_id="sync-too-long")
    assert list(Event.objects.values_list("message_id", flat=True)) == ["sync-ok"]
    rejected = RejectedEvent.objects.get()
    assert (rejected.reason, rejected.batch_index, rejected.endpoint) == ("value_too_long", 0, "batch")
    # A request-level refusal reaches the caller as an APIError with our code and message.
    with pytest.raises(APIError) as refused:
        Client("wk_revoked_long_ago", host=live_server.url, sync_mode=True).track("u-1", "Clicked")
    assert (refused.value.status, refused.value.code) == (401, "invalid_write_key")
    assert refused.value.message == "The write key is unknown, revoked or expired."


def test_rudder_sdk_python_gzips_and_sends_identify_traits_in_context(live_server, source, write_key):
    from rudderstack.analytics.client import Client

    errors = []
    client = Client(write_key, host=live_server.url, on_error=lambda error, batch: errors.append(error),
                    max_retries=1)
    assert client.gzip is True  # rudder's default: every request below is gzipped
    client.identify("u-9", {"plan": "gold"}, timestamp=WHEN, message_id="r-identify")
    client.track("u-9", "Signed Up", {"via": "ad"}, timestamp=WHEN, message_id="r-track")
    client.page("u-9", "Docs", "Home", timestamp=WHEN, message_id="r-page")
    client.screen("u-9", "App", "Home", timestamp=WHEN, message_id="r-screen")
    client.group("u-9", "g-1", {"size": 5}, timestamp=WHEN, message_id="r-group")
    client.alias("anon-9", "u-9", timestamp=WHEN, message_id="r-alias")
    client.flush()
    client.join()
    assert errors == []
    rows = {e.message_id: e for e in Event.objects.all()}
    assert {m: e.type for m, e in rows.items()} == {"r-identify": "identify", "r-track": "track", "r-page": "page",
                                                   "r-screen": "screen", "r-group": "group", "r-alias": "alias"}
    assert rows["r-identify"].traits == {"plan": "gold"}
    assert rows["r-identify"].extra["channel"] == "server"
    assert rows["r-identify"].extra["integrations"] == {"All": True}
    assert (rows["r-group"].group_id, rows["r-group"].traits) == ("g-1", {"size": 5})
    for event in rows.values():
        _assert_time(event, "2026-11-20T10:00:00.123000+00:00")  # rudder: microseconds


def test_body_only_write_key_as_segment_python_2_3_sends_it(live_server, write_key):
    body = {"batch": [{"type": "track", "event": "Clicked", "userId": "u-3", "messageId": "body-auth",
                       "timestamp": "2026-11-22T15:12:38.355+00:00"}],
            "sentAt": "2026-11-22T15:12:38.456368+00:00", "writeKey": write_key}
    response = requests.post(f"{live_server.url}/v1/batch", data=orjson.dumps(body),
                             headers={"Content-Type": "application/json", "User-Agent": "analytics-python/2.3.6"},
                             timeout=10)
    assert "Authorization" not in response.request.headers
    assert (response.status_code, response.text) == (200, '{"success":true}')
    event = Event.objects.get()
    assert (event.message_id, event.user_id, event.original_timestamp) == (
        "body-auth", "u-3", "2026-11-22T15:12:38.355+00:00")
    assert event.timestamp == event.received_at - timedelta(microseconds=101368)


def test_analytics_js_single_message_shape(live_server, source, write_key):
    message = {"timestamp": "2026-11-22T15:14:58.502Z", "integrations": {"Segment.io": True}, "event": "Clicked",
               "type": "track", "properties": {"x": 1},
               "context": {"page": {"path": "/index.html", "url": "http://shop.localhost/index.html"},
                           "library": {"name": "analytics.js", "version": "next-1.84.3"}},
               "messageId": "ajs-next-1795360498502-f6915232", "userId": "u1", "anonymousId": "fdb9f691",
               "writeKey": write_key, "sentAt": "2026-11-22T15:14:58.512Z",
               "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}}
    response = requests.post(f"{live_server.url}/v1/t", data=orjson.dumps(message), timeout=10,
                             headers={"Content-Type": "text/plain", "Origin": "http://shop.localhost"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://shop.localhost"
    event = Event.objects.get()
    assert (event.type, event.name, event.original_timestamp, event.sent_at) == (
        "track", "Clicked", "2026-11-22T15:14:58.502Z", datetime(2026, 11, 22, 15, 14, 58, 512000, tzinfo=UTC))
    assert event.timestamp == event.received_at - timedelta(milliseconds=10)
    assert event.extra == {"integrations": {"Segment.io": True}, "_metadata": message["_metadata"]}


def test_analytics_js_batching_mode_and_settings_and_preflight(live_server, write_key):
    settings = requests.get(f"{live_server.url}/v1/projects/{write_key}/settings",
                            headers={"Origin": "http://shop.localhost"}, timeout=10)
    assert settings.status_code == 200
    host = live_server.url.split("://", 1)[1]
    assert settings.json()["integrations"]["Segment.io"]["apiKey"] == write_key
    assert settings.json()["integrations"]["Segment.io"]["apiHost"] == f"{host}/v1"
    assert settings.headers["Access-Control-Allow-Origin"] == "http://shop.localhost"

    preflight = requests.options(f"{live_server.url}/v1/b", timeout=10, headers={
        "Origin": "http://shop.localhost", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]

    batch = {"writeKey": write_key, "sentAt": "2026-11-22T15:15:00.000Z",
             "batch": [{"type": "page", "anonymousId": "a-1", "messageId": f"ajs-{i}", "name": "Home",
                        "timestamp": "2026-11-22T15:14:59.000Z", "properties": {"path": "/"}} for i in range(10)]}
    response = requests.post(f"{live_server.url}/v1/b", data=orjson.dumps(batch), timeout=10,
                             auth=(write_key, ""), headers={"Content-Type": "text/plain",
                                                            "Origin": "http://shop.localhost"})
    assert response.status_code == 200
    assert Event.objects.filter(type="page", name="Home").count() == 10
    metrics = requests.post(f"{live_server.url}/v1/m", data=b'{"series": []}', timeout=10)
    assert metrics.status_code == 200


def test_concurrent_retries_of_one_batch_store_it_once(live_server, write_key):
    batch = {"batch": [{"type": "track", "event": "Order Completed", "userId": "u-c", "messageId": f"c-{i}",
                        "properties": {"order_id": f"CO-{i}", "total": i + 1}} for i in range(50)]}
    data = orjson.dumps(batch)

    def send(_):
        return requests.post(f"{live_server.url}/v1/batch", data=data, auth=(write_key, ""), timeout=30,
                             headers={"X-Retry-Count": "1"}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(8)))
    assert statuses == [200] * 8
    assert Event.objects.count() == 50
    assert Transaction.objects.count() == 50
    assert sorted(Event.objects.values_list("message_id", flat=True)) == sorted(f"c-{i}" for i in range(50))
