"""Rejected events: corrected and replayed by the command, once, with nothing lost or doubled."""

import base64
import uuid
from decimal import Decimal
from io import StringIO

import orjson
import pytest
from django.core.management import call_command

from cdp import apikeys
from consent.models import AuditEntry
from profiles.ingestion import services
from profiles.models import Event, RejectedEvent, Source, SourceKey, Transaction
from tests.ingestion_helpers import grant_analytics

pytestmark = pytest.mark.usefixtures("fresh_ingestion_caches")


@pytest.fixture
def source(client, db):
    source = Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE)
    # The site's consent manager (its own key) recorded analytics consent for these visitors.
    grant_analytics(client, apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1],
                    user_ids=["u", "u1"], anonymous_ids=["a"])
    return source


@pytest.fixture
def write_key(source):
    return apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]


def post(client, path, body, key=None, **headers):
    if key:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    return client.generic("POST", path, orjson.dumps(body), content_type="application/json", **headers)


def replay(*args) -> str:
    out = StringIO()
    call_command("replay_rejected", *args, stdout=out)
    return out.getvalue()


def test_a_corrected_batch_item_is_replayed_once(client, source, write_key, users):
    batch = [{"type": "track", "event": "Ok", "userId": "u1", "messageId": "m-ok"},
             {"type": "track", "userId": "u1", "messageId": "m-fix", "timestamp": "2026-11-22T10:00:00Z"}]
    assert post(client, "/v1/batch", {"batch": batch, "sentAt": "2026-11-22T10:00:01Z"}, write_key).status_code == 200
    rejected = RejectedEvent.objects.get()
    assert "still rejected" in replay("--id", str(rejected.pk))  # not corrected yet
    assert RejectedEvent.objects.get().replay_note.startswith("Still rejected: missing_event")

    fixed = orjson.loads(services.rejected_payload_read(rejected=rejected, actor=users["dan"]))
    fixed["event"] = "Fixed"
    assert services.rejected_payload_update(rejected=rejected, text=orjson.dumps(fixed).decode(),
                                            actor=users["dan"]) is None
    output = replay()
    assert f"#{rejected.pk} missing_event: replayed. Stored 1 event(s), 0 already present." in output
    event = Event.objects.get(message_id="m-fix")
    assert (event.name, event.source_id, event.original_timestamp) == ("Fixed", source.id, "2026-11-22T10:00:00Z")
    # The original receivedAt and the batch's sentAt still drive the clock-skew correction.
    assert event.received_at == rejected.received_at
    assert (event.received_at - event.timestamp).total_seconds() == 1
    rejected.refresh_from_db()
    assert rejected.replayed_at is not None
    assert replay() == "Nothing to replay.\n"
    assert Event.objects.count() == 2
    actions = list(AuditEntry.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["rejected_event.replayed", "rejected_event.viewed", "rejected_event.corrected",
                       "rejected_event.replayed"]


def test_origin_refusals_replay_after_the_origin_is_allowed(client, source, write_key):
    body = {"batch": [{"type": "page", "anonymousId": "a", "messageId": f"p-{i}"} for i in range(3)],
            "writeKey": write_key}
    assert post(client, "/v1/b", body, HTTP_ORIGIN="https://new.example").status_code == 403
    assert Event.objects.count() == 0
    Source.objects.filter(pk=source.pk).update(allowed_origins=["https://new.example"])
    output = replay("--reason", "origin_not_allowed", "--source", str(source.pk))
    assert "1 replayed (3 events stored), 0 still rejected." in output
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["p-0", "p-1", "p-2"]


def test_events_sent_with_an_unknown_key_replay_into_the_assigned_source(client, source):
    message = {"userId": "u1", "event": "Bought", "messageId": "k-1"}
    assert post(client, "/v1/track", message, "wk_old_key_from_the_old_system").status_code == 401
    assert "No source" in replay()
    assert RejectedEvent.objects.get().replayed_at is None
    output = replay("--reason", "invalid_write_key", "--assign-source", str(source.pk))
    assert "1 replayed" in output
    assert Event.objects.values_list("message_id", "source_id").get() == ("k-1", source.id)
    assert RejectedEvent.objects.get().source_id == source.id


def test_a_whole_batch_replay_rejects_its_still_invalid_items_again(client, source, write_key):
    body = {"batch": [{"type": "track", "event": "A", "userId": "u", "messageId": "w-0"},
                      {"type": "track", "userId": "u", "messageId": "w-1"}], "writeKey": write_key}
    assert post(client, "/v1/batch", body, HTTP_ORIGIN="https://x.example").status_code == 403
    Source.objects.filter(pk=source.pk).update(allowed_origins=["*"])
    output = replay()
    assert "Stored 1 event(s), 0 already present, 1 rejected again" in output
    again = RejectedEvent.objects.get(replayed_at__isnull=True)
    assert (again.reason, again.batch_index, again.source_id) == ("missing_event", 1, source.id)


def test_a_dry_run_stores_and_marks_nothing(client, source, write_key):
    assert post(client, "/v1/b", {"batch": [{"type": "track", "event": "A", "userId": "u"}], "writeKey": write_key},
                HTTP_ORIGIN="https://x.example").status_code == 403
    Source.objects.filter(pk=source.pk).update(allowed_origins=["*"])
    output = replay("--dry-run")
    assert "replayed. Stored 1 event(s)" in output and "Dry run: nothing was stored or marked." in output
    assert Event.objects.count() == 0
    assert RejectedEvent.objects.get().replayed_at is None


def test_a_corrected_order_creates_its_transaction_without_doubling_the_event(client, source, write_key, users):
    message = {"type": "track", "event": "Order Completed", "userId": "u", "messageId": str(uuid.uuid4()),
               "properties": {"order_id": "O-9", "total": "n/a", "currency": "EUR"}}
    assert post(client, "/v1/batch", {"batch": [message]}, write_key).status_code == 200
    assert (Event.objects.count(), Transaction.objects.count()) == (1, 0)
    rejected = RejectedEvent.objects.get()
    assert rejected.reason == "invalid_order"
    message["properties"]["total"] = 19.9
    services.rejected_payload_update(rejected=rejected, text=orjson.dumps(message).decode(), actor=users["dan"])
    assert "Stored 0 event(s), 1 already present." in replay()
    assert Transaction.objects.values_list("order_id", "amount").get() == ("O-9", Decimal("19.90"))
    assert Event.objects.count() == 1


def test_a_payload_correction_must_be_a_json_object(source, users):
    rejected = RejectedEvent.objects.create(source=source, received_at="2026-11-22T10:00:00Z", reason="invalid_json",
                                            message="bad", raw_body="{oops")
    assert services.rejected_payload_update(rejected=rejected, text="{still bad", actor=users["dan"]).code == \
        "invalid_json"
    assert services.rejected_payload_update(rejected=rejected, text="[1]", actor=users["dan"]).code == "invalid_json"
    rejected.refresh_from_db()
    assert (rejected.raw_body, rejected.payload) == ("{oops", None)


def test_payloads_are_encrypted_at_rest(client, source, write_key):
    assert post(client, "/v1/track", {"userId": "secret-user@example.com"}, write_key).status_code == 400
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT payload, raw_body FROM profiles_rejectedevent")
        payload, raw_body = cursor.fetchone()
    assert payload.startswith("e1.") and "secret-user" not in payload
    assert raw_body.startswith("e1.")
    assert "secret-user@example.com" in RejectedEvent.objects.get().payload


def test_a_real_worker_purges_expired_message_ids(celery_worker_process, settings):
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from profiles.models import EventDedupe
    from profiles.tasks import event_dedupe_purge_task
    from tests.helpers import wait_until

    source = Source.objects.create(name="Purge")
    old = timezone.now() - timedelta(days=settings.CDP_INGEST_DEDUPE_DAYS, hours=1)
    EventDedupe.objects.create(source=source, message_id="expired", first_received_at=old)
    EventDedupe.objects.create(source=source, message_id="recent", first_received_at=timezone.now())
    with transaction.atomic():
        transaction.on_commit(lambda: event_dedupe_purge_task.delay())
    wait_until(lambda: not EventDedupe.objects.filter(message_id="expired").exists(), timeout=30)
    assert list(EventDedupe.objects.values_list("message_id", flat=True)) == ["recent"]
