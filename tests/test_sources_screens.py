"""Sources and rejected-events screens: who may open them, keys shown once, rotate, revoke,
origins, replay from the browser; every denied action changes nothing."""

import base64

import orjson
import pytest
from django.urls import reverse
from django.utils import timezone

from cdp import apikeys
from consent.models import AuditEntry
from profiles.models import Event, RejectedEvent, Source, SourceKey
from tests.ingestion_helpers import CONSENT

pytestmark = pytest.mark.usefixtures("fresh_ingestion_caches")


@pytest.fixture
def source(db):
    return Source.objects.create(name="Web shop", kind=Source.Kind.WEBSITE, allowed_origins=["https://shop.example"])


@pytest.fixture
def key(source):
    return apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)


@pytest.fixture
def rejected(source):
    return RejectedEvent.objects.create(source=source, received_at=timezone.now(), endpoint="track",
                                        reason="missing_event", message="A track message needs an event name.",
                                        payload='{"userId": "u1", "messageId": "fix-me"}')


def _screens(source, key, rejected):
    return [
        ("get", reverse("profiles:sources"), {}),
        ("get", reverse("profiles:source-create"), {}),
        ("post", reverse("profiles:source-create"), {"name": "Sneaky", "kind": "website"}),
        ("get", reverse("profiles:source-detail", args=[source.pk]), {}),
        ("post", reverse("profiles:source-edit", args=[source.pk]), {"allowed_origins": "*", "is_active": "on"}),
        ("post", reverse("profiles:source-key-create", args=[source.pk]), {"kind": "write"}),
        ("post", reverse("profiles:source-key-rotate", args=[source.pk, key[0].pk]), {"overlap_hours": "1"}),
        ("post", reverse("profiles:source-key-revoke", args=[source.pk, key[0].pk]), {}),
        ("get", reverse("profiles:rejected"), {}),
        ("get", reverse("profiles:rejected-detail", args=[rejected.pk]), {}),
        ("post", reverse("profiles:rejected-detail", args=[rejected.pk]), {"payload": "{}"}),
        ("post", reverse("profiles:rejected-replay", args=[rejected.pk]), {}),
    ]


def _state():
    return (list(Source.objects.values_list("name", "allowed_origins", "is_active").order_by("pk")),
            list(SourceKey.objects.values_list("pk", "revoked_at", "expires_at").order_by("pk")),
            list(RejectedEvent.objects.values_list("pk", "payload", "replayed_at")), Event.objects.count(),
            AuditEntry.objects.count())


@pytest.mark.parametrize("username", ["alice", "cora", "mallory"])
def test_roles_without_manage_sources_get_403_and_change_nothing(client, users, source, key, rejected, username):
    client.force_login(users[username])
    before = _state()
    for method, url, data in _screens(source, key, rejected):
        response = getattr(client, method)(url, data)
        assert response.status_code == 403, (username, method, url)
    assert _state() == before


def test_anonymous_visitors_are_sent_to_login(client, source, key, rejected):
    for method, url, data in _screens(source, key, rejected):
        response = getattr(client, method)(url, data)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


@pytest.mark.parametrize("username", ["dan", "root"])
def test_data_team_and_admins_open_every_screen(client, users, source, key, rejected, username):
    client.force_login(users[username])
    for url in (reverse("profiles:sources"), reverse("profiles:source-create"),
                reverse("profiles:source-detail", args=[source.pk]), reverse("profiles:rejected"),
                reverse("profiles:rejected-detail", args=[rejected.pk])):
        assert client.get(url).status_code == 200, url


def test_unknown_ids_are_404(client, users, source, key):
    client.force_login(users["dan"])
    other = Source.objects.create(name="Other")
    assert client.get(reverse("profiles:source-detail", args=[99999])).status_code == 404
    assert client.get(reverse("profiles:rejected-detail", args=[99999])).status_code == 404
    # A key addressed through another source's URL is "not found", and stays active.
    assert client.post(reverse("profiles:source-key-revoke", args=[other.pk, key[0].pk])).status_code == 404
    assert SourceKey.objects.get(pk=key[0].pk).revoked_at is None


def test_creating_a_source_shows_its_write_key_once_and_stores_only_the_hash(client, users):
    client.force_login(users["dan"])
    response = client.post(reverse("profiles:source-create"), {
        "name": "Mobile app", "kind": "app", "allowed_origins": "https://app.example/\nhttps://m.example",
        "events_per_minute_limit": "6000"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    raw = response.context["raw_key"]
    assert raw.startswith("wk_") and raw in response.content.decode()
    source = Source.objects.get(name="Mobile app")
    assert (source.kind, source.allowed_origins, source.events_per_minute_limit, source.created_by) == (
        "app", ["https://app.example", "https://m.example"], 6000, users["dan"])
    key = SourceKey.objects.get(source=source)
    assert key.key_hash == apikeys.key_hash(raw) and key.kind == "write"
    detail = client.get(reverse("profiles:source-detail", args=[source.pk])).content.decode()
    assert raw not in detail and key.prefix in detail
    assert AuditEntry.objects.filter(action="source.created", object_id=str(source.pk)).count() == 1


@pytest.mark.parametrize("data, field, fragment", [
    ({"name": "", "kind": "website"}, "name", "required"),
    ({"name": "Web shop", "kind": "website"}, "name", "exists already"),
    ({"name": "X", "kind": "spaceship"}, "kind", "valid choice"),
    ({"name": "X", "kind": "website", "allowed_origins": "shop.example"}, "allowed_origins", "not an origin"),
    ({"name": "X", "kind": "website", "allowed_origins": "https://shop.example/path"}, "allowed_origins",
     "not an origin"),
    ({"name": "X", "kind": "website", "events_per_minute_limit": "10"}, "events_per_minute_limit", "2500"),
])
def test_source_form_errors(client, users, source, data, field, fragment):
    client.force_login(users["dan"])
    response = client.post(reverse("profiles:source-create"), data)
    assert response.status_code == 200
    assert fragment in " ".join(response.context["form"].errors[field])
    assert Source.objects.count() == 1


def test_rotation_keeps_the_old_key_for_the_overlap_and_shows_the_new_one_once(client, users, source, key):
    client.force_login(users["dan"])
    old, old_raw = key
    response = client.post(reverse("profiles:source-key-rotate", args=[source.pk, old.pk]), {"overlap_hours": "1"})
    new_raw = response.context["raw_key"]
    assert new_raw != old_raw
    old.refresh_from_db()
    assert old.revoked_at is None
    assert 3500 < (old.expires_at - timezone.now()).total_seconds() <= 3600
    assert apikeys.key_resolve(old_raw, kind="write") and apikeys.key_resolve(new_raw, kind="write")


def test_revoking_a_key_refuses_its_events_at_once(client, users, source, key):
    client.force_login(users["dan"])
    response = client.post(reverse("profiles:source-key-revoke", args=[source.pk, key[0].pk]), follow=True)
    assert "revoked" in response.content.decode()
    auth = "Basic " + base64.b64encode(f"{key[1]}:".encode()).decode()
    refused = client.generic("POST", "/v1/track", orjson.dumps({"userId": "u", "event": "E"}),
                             HTTP_AUTHORIZATION=auth)
    assert refused.status_code == 401
    assert Event.objects.count() == 0


def test_issuing_a_read_key(client, users, source):
    client.force_login(users["dan"])
    raw = client.post(reverse("profiles:source-key-create", args=[source.pk]), {"kind": "read"}).context["raw_key"]
    assert raw.startswith("rk_")
    assert apikeys.key_resolve(raw, kind="read").source_id == source.pk


def test_editing_origins_and_deactivating(client, users, source, key):
    client.force_login(users["dan"])
    response = client.post(reverse("profiles:source-edit", args=[source.pk]),
                           {"allowed_origins": "https://a.example, https://b.example", "events_per_minute_limit": ""})
    assert response.status_code == 302
    source.refresh_from_db()
    assert (source.allowed_origins, source.is_active, source.events_per_minute_limit) == (
        ["https://a.example", "https://b.example"], False, None)
    assert apikeys.key_resolve(key[1], kind="write") is None  # inactive sources authenticate nothing
    bad = client.post(reverse("profiles:source-edit", args=[source.pk]), {"allowed_origins": "ftp://x"})
    assert bad.status_code == 400
    source.refresh_from_db()
    assert source.allowed_origins == ["https://a.example", "https://b.example"]


def test_source_page_shows_hourly_volume_and_rejections(client, users, source, key, rejected):
    auth = "Basic " + base64.b64encode(f"{key[1]}:".encode()).decode()
    body = {"batch": [{"type": "track", "event": "E", "userId": "u", "context": CONSENT} for _ in range(3)]}
    assert client.generic("POST", "/v1/batch", orjson.dumps(body), HTTP_AUTHORIZATION=auth).status_code == 200
    client.force_login(users["dan"])
    response = client.get(reverse("profiles:source-detail", args=[source.pk]))
    chart = response.context["chart"]
    assert len(chart["labels"]) == 48
    assert (chart["accepted"][-1], chart["rejected"][-1], sum(chart["accepted"])) == (3, 1, 3)
    assert response.context["reasons"] == [("missing_event", 1)]
    listing = client.get(reverse("profiles:sources"))
    row = listing.context["sources"][0]
    assert (row.events_24h, row.rejected_24h, row.rejected_pending, row.active_keys) == (3, 1, 1, 1)


def test_rejected_list_filters_by_reason_source_and_status(client, users, source, rejected):
    other = Source.objects.create(name="CRM")
    RejectedEvent.objects.create(source=other, received_at=timezone.now(), reason="invalid_json", message="m")
    RejectedEvent.objects.create(source=source, received_at=timezone.now(), reason="invalid_json", message="m",
                                 replayed_at=timezone.now())
    client.force_login(users["dan"])

    def listed(**params):
        response = client.get(reverse("profiles:rejected"), params)
        return sorted((row.source.name, row.reason) for row in response.context["page"].object_list)

    assert listed() == [("CRM", "invalid_json"), ("Web shop", "missing_event")]
    assert listed(reason="invalid_json") == [("CRM", "invalid_json")]
    assert listed(source=source.pk, status="all") == [("Web shop", "invalid_json"), ("Web shop", "missing_event")]
    assert listed(status="replayed") == [("Web shop", "invalid_json")]
    assert listed(source="not-a-number") == listed()


def test_viewing_a_payload_is_audited_and_a_correction_replays(client, users, source, rejected):
    client.force_login(users["dan"])
    page = client.get(reverse("profiles:rejected-detail", args=[rejected.pk]))
    assert "fix-me" in page.content.decode()
    assert AuditEntry.objects.filter(action="rejected_event.viewed", actor=users["dan"]).count() == 1
    bad = client.post(reverse("profiles:rejected-detail", args=[rejected.pk]), {"payload": "{nope"})
    assert bad.status_code == 400 and "Not valid JSON" in bad.content.decode()
    fixed = orjson.dumps({"userId": "u1", "messageId": "fix-me", "event": "Fixed", "context": CONSENT}).decode()
    assert client.post(reverse("profiles:rejected-detail", args=[rejected.pk]), {"payload": fixed}).status_code == 302
    response = client.post(reverse("profiles:rejected-replay", args=[rejected.pk]), follow=True)
    assert "Stored 1 event(s)" in response.content.decode()
    assert Event.objects.values_list("name", "message_id", "source_id").get() == ("Fixed", "fix-me", source.pk)
    rejected.refresh_from_db()
    assert rejected.replayed_by == users["dan"]


def test_imports_page_links_to_sources(client, users, source):
    client.force_login(users["dan"])
    html = client.get(reverse("profiles:imports")).content.decode()
    assert reverse("profiles:sources") in html and reverse("profiles:rejected") in html
