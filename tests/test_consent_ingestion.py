"""Consent enforcement at ingestion (issue 6), through the real `/v1` views on the real database:
no analytics consent -> nothing stored but a count; consent carried by the message itself;
withdrawal; erased people stay erased; field-level minimisation; bounded queries per batch; and
segment-analytics-python end to end with the consent context a real site sends."""

import contextlib
import re
import tempfile
import uuid
from datetime import UTC, datetime

import orjson
import pytest
from django.db import connection, connections
from django.urls import reverse
from psycopg import pq

from cdp import apikeys
from consent import reference
from consent.models import ConsentRecord, MinimisationRule, Purpose, SuppressionEntry
from consent.services import person
from profiles.identifiers import identity_hash
from profiles.ingestion import services
from profiles.models import (
    DroppedEventCount,
    Event,
    EventDedupe,
    Identity,
    Profile,
    Source,
    SourceKey,
    Transaction,
)
from tests.identity_helpers import resolve_all
from tests.ingestion_helpers import CONSENT, basic, grant_analytics, with_consent

pytestmark = pytest.mark.usefixtures("fresh_ingestion_caches")


@pytest.fixture
def source(db):
    return Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE)


@pytest.fixture
def write_key(source):
    return apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]


def track(anonymous_id="anon-1", **overrides) -> dict:
    message = {"type": "track", "event": "Product Viewed", "anonymousId": anonymous_id,
               "messageId": str(uuid.uuid4()), "properties": {"sku": "A1"}}
    message.update(overrides)
    return message


def post(client, key, *messages, path="/v1/batch"):
    body = {"batch": list(messages)} if path == "/v1/batch" else messages[0]
    response = client.generic("POST", path, orjson.dumps(body), content_type="application/json",
                              HTTP_AUTHORIZATION=basic(key))
    assert (response.status_code, response.content) == (200, b'{"success":true}')
    return response


def dropped(source) -> list[tuple[str, int]]:
    return sorted(DroppedEventCount.objects.filter(source=source).values_list("reason", "count"))


def this_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def test_without_analytics_consent_nothing_is_stored_and_only_a_count_is_kept(client, source, write_key):
    order = track(event="Order Completed", userId="u-1",
                  properties={"order_id": "SO-1", "total": 30, "currency": "EUR"})
    post(client, write_key, track(), order, track(anonymous_id="anon-2"))
    post(client, write_key, {"userId": "u-1", "traits": {"email": "ann@example.com"}}, path="/v1/identify")
    assert (Event.objects.count(), Transaction.objects.count(), EventDedupe.objects.count()) == (0, 0, 0)
    row = DroppedEventCount.objects.get()
    assert (row.source_id, row.hour, row.reason, row.count) == (source.id, this_hour(), "no_consent", 4)
    assert resolve_all() == 0
    assert (Profile.objects.count(), Identity.objects.count()) == (0, 0)
    # Consent for a purpose other than analytics does not let events in.
    grant = {"batch": [{"anonymousId": "anon-1", "purposes": {"personalization": True, "analytics": False}}]}
    assert client.generic("POST", "/v1/consent", orjson.dumps(grant), content_type="application/json",
                          HTTP_AUTHORIZATION=basic(write_key)).status_code == 200
    post(client, write_key, track())
    assert Event.objects.count() == 0
    assert dropped(source) == [("no_consent", 5)]


def test_a_grant_in_category_preferences_lets_its_own_message_in(client, source, write_key):
    first = with_consent(track(messageId="m-1"))
    post(client, write_key, track(anonymous_id="anon-x", messageId="m-0"), first)
    assert list(Event.objects.values_list("message_id", flat=True)) == ["m-1"]
    assert Event.objects.get().context == CONSENT  # the consent context is stored as sent
    records = sorted(ConsentRecord.objects.values_list("subject_kind", "purpose__key", "granted", "source",
                                                       "actor_key_id"))
    key_id = SourceKey.objects.get(source=source).id
    assert records == [("anonymous_id", "advertising", False, "web_banner", key_id),
                       ("anonymous_id", "analytics", True, "web_banner", key_id)]
    # Later events need no consent context; repeating it adds nothing to the ledger.
    post(client, write_key, track(messageId="m-2"), with_consent(track(messageId="m-3")))
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-2", "m-3"]
    assert ConsentRecord.objects.count() == 2
    assert dropped(source) == [("no_consent", 1)]


def test_consent_a_request_carries_applies_to_all_of_its_messages(client, source, write_key):
    """Recorded before any message is judged, as identify traits apply to the whole batch."""
    post(client, write_key, track(anonymous_id="anon-y", messageId="y-0"),
         with_consent(track(anonymous_id="anon-y", messageId="y-1")), track(anonymous_id="anon-z", messageId="z-0"))
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["y-0", "y-1"]
    assert dropped(source) == [("no_consent", 1)]

def test_after_a_withdrawal_events_are_dropped(client, source, write_key):
    grant_analytics(client, write_key, user_ids=["u-7"])
    post(client, write_key, track(anonymous_id=None, userId="u-7", messageId="before"))
    withdraw = {"userId": "u-7", "purposes": ["analytics"]}
    assert client.generic("POST", "/v1/consent/withdraw", orjson.dumps(withdraw), content_type="application/json",
                          HTTP_AUTHORIZATION=basic(write_key)).status_code == 200
    post(client, write_key, track(anonymous_id=None, userId="u-7", messageId="after"))
    # A withdrawal carried by the banner's context drops that very message too.
    refusal = {"consent": {"categoryPreferences": {"Analytics": False}}}
    post(client, write_key, track(anonymous_id="anon-9", messageId="granted", context=CONSENT))
    post(client, write_key, track(anonymous_id="anon-9", messageId="refused", context=refusal))
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["before", "granted"]
    assert dropped(source) == [("no_consent", 2)]


def test_one_withdrawn_identifier_of_a_message_drops_it(client, source, write_key):
    grant_analytics(client, write_key, anonymous_ids=["anon-1"])
    withdraw = {"userId": "u-1", "all": True}
    client.generic("POST", "/v1/consent/withdraw", orjson.dumps(withdraw), content_type="application/json",
                   HTTP_AUTHORIZATION=basic(write_key))
    post(client, write_key, track(userId="u-1"), track(userId="u-2"))
    assert list(Event.objects.values_list("user_id", flat=True)) == ["u-2"]
    assert dropped(source) == [("no_consent", 1)]


def _erased_ada(client, write_key) -> None:
    """Ada identified herself (with consent), was resolved into a profile, then erased."""
    post(client, write_key, with_consent({"type": "identify", "userId": "u-ada", "anonymousId": "anon-ada",
                                          "traits": {"email": "Ada@Example.com"}, "messageId": "ada-1"}))
    assert resolve_all() == 1
    person.person_erase(person=person.person_find(kind="email", value="ada@example.com"))
    assert Event.objects.count() == 0 and Profile.objects.filter(merged_into__isnull=True).count() == 0
    assert SuppressionEntry.objects.filter(kind="email", lifted_at__isnull=True).count() == 1


def test_an_erased_persons_email_in_an_identify_is_not_stored(client, source, write_key):
    grant_analytics(client, write_key, anonymous_ids=["laptop-2"])  # a device consented earlier
    _erased_ada(client, write_key)
    post(client, write_key, {"type": "identify", "anonymousId": "laptop-2", "messageId": "ada-2",
                             "traits": {"email": "ada@example.com", "plan": "pro"}})
    post(client, write_key, track(anonymous_id=None, userId="u-ada", messageId="ada-3"))
    assert Event.objects.count() == 0
    assert dropped(source) == [("suppressed", 2)]
    assert resolve_all() == 0
    email = identity_hash("email", "ada@example.com")
    assert not Identity.objects.filter(kind="email", value_hash=email).exists()


def test_new_consent_in_the_message_lets_an_erased_person_back(client, source, write_key):
    _erased_ada(client, write_key)
    post(client, write_key, with_consent({"type": "identify", "anonymousId": "phone-3", "messageId": "ada-back",
                                          "traits": {"email": "ada@example.com"}}))
    assert list(Event.objects.values_list("message_id", flat=True)) == ["ada-back"]
    assert dropped(source) == []
    assert resolve_all() == 1
    assert Identity.objects.filter(kind="email", value_hash=identity_hash("email", "ada@example.com")).exists()


@pytest.fixture
def rules(db):
    purposes = {p.key: p for p in Purpose.objects.all()}
    MinimisationRule.objects.create(event_type="*", field_path="context.ip", action="drop",
                                    purpose=purposes["personalization"])
    MinimisationRule.objects.create(event_type="identify", field_path="traits.email", action="hash",
                                    purpose=purposes["email_marketing"])
    MinimisationRule.objects.create(event_type="track", event_name="Order Completed",
                                    field_path="properties.address", action="drop", purpose=purposes["advertising"])
    reference.cache_clear()


def test_minimisation_rules_apply_before_storage(client, source, write_key, rules):
    from consent.enforcement import field_hash

    grant_analytics(client, write_key, anonymous_ids=["anon-min"])
    full = {"batch": [{"anonymousId": "anon-all", "purposes": {"analytics": True, "personalization": True,
                                                             "email_marketing": True, "advertising": True}}]}
    client.generic("POST", "/v1/consent", orjson.dumps(full), content_type="application/json",
                   HTTP_AUTHORIZATION=basic(write_key))
    context = {"ip": "203.0.113.7", "locale": "en-GB"}
    order = {"order_id": "SO-9", "total": 10, "address": {"street": "Main St 1"}}
    messages = []
    for anonymous_id in ("anon-min", "anon-all"):
        messages += [
            {"type": "identify", "anonymousId": anonymous_id, "messageId": f"{anonymous_id}-i", "context": context,
             "traits": {"email": "ann@example.com", "plan": "pro"}},
            track(anonymous_id=anonymous_id, messageId=f"{anonymous_id}-o", event="Order Completed",
                  properties={**order, "order_id": f"SO-{anonymous_id}"}, context=context)]
    post(client, write_key, *messages)
    rows = {e.message_id: e for e in Event.objects.all()}
    assert rows["anon-min-i"].context == {"locale": "en-GB"}
    assert rows["anon-min-i"].traits == {"email": field_hash(["traits", "email"], "ann@example.com"), "plan": "pro"}
    assert rows["anon-min-o"].properties == {"order_id": "SO-anon-min", "total": 10}
    assert rows["anon-min-o"].context == {"locale": "en-GB"}
    assert rows["anon-all-i"].context == context
    assert rows["anon-all-i"].traits == {"email": "ann@example.com", "plan": "pro"}
    assert rows["anon-all-o"].properties == {**order, "order_id": "SO-anon-all"}
    assert sorted(Transaction.objects.values_list("order_id", flat=True)) == ["SO-anon-all", "SO-anon-min"]
    # The hashed email cannot be matched: no email identity is made from it.
    assert resolve_all() == 4
    assert list(Identity.objects.filter(kind="email").values_list("value_hash", flat=True)) == [
        identity_hash("email", "ann@example.com")]


def test_a_rule_that_leaves_a_message_invalid_drops_it(client, source, write_key):
    MinimisationRule.objects.create(event_type="track", field_path="event", action="drop",
                                    purpose=Purpose.objects.get(key="advertising"))
    reference.cache_clear()
    post(client, write_key, with_consent(track(messageId="t-1")),
         with_consent({"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "p-1"}))
    assert list(Event.objects.values_list("message_id", flat=True)) == ["p-1"]
    assert dropped(source) == [("minimised_invalid", 1)]


def test_replayed_rejections_pass_the_same_gate(client, source, write_key):
    post(client, write_key, {"type": "track", "anonymousId": "anon-r", "messageId": "r-1"})  # no event: rejected
    from profiles.models import RejectedEvent

    rejected = RejectedEvent.objects.get()
    RejectedEvent.objects.filter(pk=rejected.pk).update(
        payload=orjson.dumps({"type": "track", "anonymousId": "anon-r", "event": "Fixed", "messageId": "r-1"}).decode())
    outcome = services.rejected_replay(rejected_id=rejected.pk)
    assert (outcome.replayed, outcome.stored, outcome.dropped) == (True, 0, 1)
    assert outcome.note == "Stored 0 event(s), 0 already present, 1 not kept for lack of consent (counted only)."
    assert Event.objects.count() == 0
    assert dropped(source) == [("no_consent", 1)]


@contextlib.contextmanager
def statements_sent():
    """The first word of every statement this connection sends, from libpq's protocol trace
    (Django's query capture misses the raw psycopg cursor: dedupe, COPY). A statement is one
    `Query` (simple protocol) or one `Bind` (extended protocol, prepared or not: "(bound)")."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    sent: list[str] = []
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield sent
        finally:
            pgconn.untrace()
        trace.seek(0)
        text = trace.read().decode(errors="replace")
    for kind, rest in re.findall(r'^F\t\d+\t(Query|Bind)\t(.*?)(?=^[FB]\t|\Z)', text, flags=re.M | re.S):
        sent.append(rest.strip(' "\n').split()[0] if kind == "Query" else "(bound)")


def test_a_batch_costs_the_same_queries_whatever_its_size(client, source, write_key, django_assert_num_queries):
    """Per request, whatever the batch size, with every message carrying its consent context: one
    read of consent and suppression states, and one statement that claims the message ids and
    inserts the new events; never a query per message (the ledger is written only when a
    preference changes)."""
    grant = [with_consent(track(anonymous_id=f"v-{n}")) for n in range(100)]
    post(client, write_key, *grant)  # records the decisions once, warms the source and key caches
    for size in (1, 100):
        batch = [with_consent(track(anonymous_id=f"v-{n}")) for n in range(size)]
        # No ORM query at all: Django sees only the savepoint pair standing in for BEGIN / COMMIT
        # here; the consent read and the insert use the raw psycopg cursor.
        with django_assert_num_queries(2), statements_sent() as sent:
            post(client, write_key, *batch)
        assert sent == ["SAVEPOINT", "(bound)", "(bound)", "RELEASE"]
    assert Event.objects.count() == 201
    assert ConsentRecord.objects.count() == 200


def test_dropped_counts_add_up_per_hour_and_reason(client, source, write_key):
    post(client, write_key, track(), track())
    post(client, write_key, track())
    other = Source.objects.create(name="App", kind=Source.Kind.APP)
    other_key = apikeys.source_key_create(source=other, kind=SourceKey.Kind.WRITE)[1]
    post(client, other_key, track())
    assert dropped(source) == [("no_consent", 3)]
    assert dropped(other) == [("no_consent", 1)]


# -- a real library, a live server ----------------------------------------------------------------

@pytest.fixture
def live_source(transactional_db):
    source = Source.objects.create(name="Live shop", kind=Source.Kind.WEBSITE)
    return source, apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]


@pytest.fixture
def _no_persistent_connections_in_handler_threads():
    database = connections.settings["default"]
    previous = database["CONN_MAX_AGE"]
    database["CONN_MAX_AGE"] = 0
    yield
    database["CONN_MAX_AGE"] = previous


def test_segment_python_with_consent_context_anonymous_browse_then_login_is_one_profile(
        live_server, live_source, _no_persistent_connections_in_handler_threads):
    from segment.analytics.client import Client

    source, key = live_source
    errors = []
    client = Client(key, host=live_server.url, on_error=lambda error, batch: errors.append(error), max_retries=1)
    client.page(anonymous_id="anon-live", name="Home", context=CONSENT, message_id="live-1")
    client.track(anonymous_id="anon-live", event="Product Viewed", properties={"sku": "A-1"}, context=CONSENT,
                 message_id="live-2")
    client.identify("u-live", {"email": "liv@example.com"}, anonymous_id="anon-live", context=CONSENT,
                    message_id="live-3")
    client.track("u-live", "Order Completed", {"order_id": "SO-L", "total": 20, "currency": "EUR"},
                 context=CONSENT, message_id="live-4")
    client.track(anonymous_id="anon-stranger", event="Product Viewed", message_id="live-5")  # no consent
    client.flush()
    client.join()
    assert errors == []
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["live-1", "live-2", "live-3", "live-4"]
    assert dropped(source) == [("no_consent", 1)]
    assert resolve_all() == 4
    profiles = set(Event.objects.values_list("profile_id", flat=True))
    assert len(profiles) == 1 and None not in profiles
    assert Transaction.objects.get().profile_id in profiles
    assert set(Identity.objects.values_list("kind", flat=True)) == {"anonymous_id", "user_id", "email"}
    assert Profile.objects.filter(merged_into__isnull=True).count() == 1


def test_the_sources_screens_show_dropped_counts_beside_stored_and_rejected(client, source, write_key, users):
    post(client, write_key, with_consent(track(messageId="kept")), track(anonymous_id="stranger"),
         track(anonymous_id="stranger-2"), {"type": "track", "anonymousId": "anon-1", "messageId": "no-event"})
    client.force_login(users["dan"])
    row = client.get(reverse("profiles:sources")).context["sources"][0]
    assert (row.events_24h, row.rejected_24h, row.dropped_24h) == (1, 1, 2)
    detail = client.get(reverse("profiles:source-detail", args=[source.pk]))
    assert (detail.context["chart"]["accepted"][-1], detail.context["chart"]["rejected"][-1],
            detail.context["chart"]["dropped"][-1]) == (1, 1, 2)
    assert detail.context["dropped_reasons"] == [("No analytics consent", 2)]
    html = detail.content.decode()
    assert "1 stored, 1 rejected, 2 dropped for lack of consent" in html
    assert "stranger" not in html  # counts only: nothing of a dropped event is kept or shown


def test_the_gate_logs_no_personal_data(client, source, write_key, caplog, monkeypatch):
    import logging

    from cdp.logging import RedactPersonalData

    monkeypatch.setattr(RedactPersonalData, "filter", lambda self, record: True)  # see what the code logs
    caplog.set_level(logging.DEBUG)
    identify = {"type": "identify", "userId": "usr-zz-40417", "anonymousId": "anon-zz-90210",
                "traits": {"email": "zelda.zimmermann@example.org"}, "messageId": "zz-1"}
    post(client, write_key, identify)
    post(client, write_key, with_consent({**identify, "messageId": "zz-2"}),
         track(anonymous_id="anon-zz-90210", messageId="zz-3"))
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["zz-2", "zz-3"]
    assert dropped(source) == [("no_consent", 1)]
    logged = "\n".join(record.getMessage() + " " + " ".join(str(value) for value in vars(record).values())
                       for record in caplog.records).lower()
    assert any(record.getMessage() == "ingested" for record in caplog.records)
    for needle in ("usr-zz-40417", "anon-zz-90210", "zelda", "zimmermann"):
        assert needle not in logged
