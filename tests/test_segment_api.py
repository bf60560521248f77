"""The staff API and screens: one permission matrix, CRUD, sharing, masking, export, static uploads."""

import csv
import io

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from consent.models import AuditEntry
from segments.models import Membership, Segment, SegmentRun
from segments.services.definitions import segment_create
from segments.services.recompute import segment_recompute
from tests.helpers import PASSWORD
from tests.segment_helpers import World, definition

pytestmark = pytest.mark.django_db
DE = definition({"type": "trait", "field": "country", "operator": "=", "value": "DE"})


@pytest.fixture
def cast(users):
    mara = User.objects.create_user(username="mara", password=PASSWORD)
    mara.groups.add(Group.objects.get(name="marketer"))
    return {**users, "mara": mara}


@pytest.fixture
def owned(cast):
    w = World()
    anna = w.profile(country="DE", city="Berlin", first_name="Anna", last_name="Schmidt")
    w.identity(anna, "email", "anna.schmidt@example.com")
    segment = segment_create(actor=cast["alice"], key="germans", name="Germans", definition=DE)
    segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
    segment.refresh_from_db()
    return segment


MATRIX = {
    # action: {user: expected status}
    "list": {"alice": 200, "mara": 200, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "retrieve": {"alice": 200, "mara": 404, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "create": {"alice": 201, "mara": 201, "dan": 403, "cora": 403, "mallory": 403, "root": 201},
    "update": {"alice": 200, "mara": 404, "dan": 403, "cora": 403, "mallory": 403, "root": 200},
    "recompute": {"alice": 202, "mara": 404, "dan": 403, "cora": 403, "mallory": 403, "root": 202},
    "members": {"alice": 200, "mara": 404, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "diff": {"alice": 200, "mara": 404, "dan": 403, "cora": 403, "mallory": 403, "root": 200},
    "shares": {"alice": 200, "mara": 404, "dan": 403, "cora": 403, "mallory": 403, "root": 200},
    "archive": {"alice": 204, "mara": 404, "dan": 403, "cora": 403, "mallory": 403, "root": 204},
}


def call(client, action, username):
    base = "/api/segments/"
    json = {"content_type": "application/json"}
    return {
        "list": lambda: client.get(base),
        "retrieve": lambda: client.get(f"{base}germans/"),
        "create": lambda: client.post(base, {"key": f"by_{username}", "name": "Mine", "definition": DE}, **json),
        "update": lambda: client.patch(f"{base}germans/", {"name": "Renamed"}, **json),
        "recompute": lambda: client.post(f"{base}germans/recompute/"),
        "members": lambda: client.get(f"{base}germans/members/"),
        "diff": lambda: client.post(f"{base}germans/diff/", {"definition": DE}, **json),
        "shares": lambda: client.post(f"{base}germans/shares/", {"permission": "view", "user": "cora"}, **json),
        "archive": lambda: client.delete(f"{base}germans/"),
    }[action]()


@pytest.mark.parametrize("action, username, expected",
                         [(action, user, code) for action, row in MATRIX.items() for user, code in row.items()])
def test_permission_matrix(client, cast, owned, action, username, expected):
    client.force_login(cast[username])
    runs_before = SegmentRun.objects.count()
    response = call(client, action, username)
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert set(response.json()) >= {"code", "message"}
        owned.refresh_from_db()
        assert (owned.name, owned.is_active) == ("Germans", True)
        assert SegmentRun.objects.count() == runs_before
        assert not Segment.objects.filter(key=f"by_{username}").exists()
    if action == "list" and expected == 200:
        keys = [row["key"] for row in response.json()["results"]]
        assert keys == ([] if username == "mara" else ["germans"])


def test_anonymous_callers_get_nothing(client, owned):
    assert client.get("/api/segments/").status_code == 403
    assert client.get(reverse("segments:list")).status_code == 302


SCREENS = {
    "segments:list": {"alice": 200, "mara": 200, "dan": 200, "cora": 200, "mallory": 403},
    "segments:detail": {"alice": 200, "mara": 404, "dan": 200, "cora": 200, "mallory": 403},
    "segments:edit": {"alice": 200, "mara": 404, "dan": 403, "cora": 403, "mallory": 403},
    "segments:new": {"alice": 200, "mara": 200, "dan": 403, "cora": 403, "mallory": 403},
    "segments:export": {"alice": 200, "mara": 404, "dan": 200, "cora": 200, "mallory": 403},
    "segments:status": {"alice": 200, "mara": 404, "dan": 200, "cora": 200, "mallory": 403},
}


@pytest.mark.parametrize("name, username, expected",
                         [(name, user, code) for name, row in SCREENS.items() for user, code in row.items()])
def test_screen_access_matrix(client, cast, owned, name, username, expected):
    client.force_login(cast[username])
    args = [] if name in ("segments:list", "segments:new") else ["germans"]
    assert client.get(reverse(name, args=args)).status_code == expected


def test_sharing_with_a_user_and_a_group_through_guardian(client, cast, owned):
    client.force_login(cast["alice"])
    json = {"content_type": "application/json"}
    grants = client.post("/api/segments/germans/shares/", {"permission": "view", "user": "mara"}, **json).json()
    assert grants == {"owner": "alice", "users": [{"user": "mara", "permissions": ["view"]}], "groups": []}
    client.force_login(cast["mara"])
    assert [row["key"] for row in client.get("/api/segments/").json()["results"]] == ["germans"]
    assert client.get("/api/segments/germans/").status_code == 200
    assert client.patch("/api/segments/germans/", {"name": "Mine now"}, **json).status_code == 403
    client.force_login(cast["alice"])
    client.post("/api/segments/germans/shares/", {"permission": "change", "group": "marketer"}, **json)
    client.force_login(cast["mara"])
    assert client.patch("/api/segments/germans/", {"name": "Shared edit"}, **json).status_code == 200
    assert client.delete("/api/segments/germans/").status_code == 403  # only the owner archives
    client.force_login(cast["alice"])
    client.post("/api/segments/germans/shares/", {"permission": "view", "user": "mara", "grant": False}, **json)
    client.post("/api/segments/germans/shares/", {"permission": "change", "group": "marketer", "grant": False}, **json)
    client.force_login(cast["mara"])
    assert client.get("/api/segments/germans/").status_code == 404
    client.force_login(cast["alice"])
    refused = client.post("/api/segments/germans/shares/", {"permission": "view", "user": "mallory"}, **json)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_grantee"


def test_members_are_masked_for_marketers_and_audited_when_shown_in_full(client, cast, owned):
    client.force_login(cast["alice"])
    masked = client.get("/api/segments/germans/members/").json()
    assert masked["masked"] is True
    assert masked["results"][0] | {"last_seen_at": None, "entered_at": None} == {
        "profile_id": masked["results"][0]["profile_id"], "name": "A*** S***", "email": "a***@example.com",
        "country": "DE", "city": "B***", "last_seen_at": None, "entered_at": None}
    assert not AuditEntry.objects.filter(action="segment.members_viewed").exists()
    client.force_login(cast["cora"])
    full = client.get("/api/segments/germans/members/").json()
    assert full["masked"] is False
    assert (full["results"][0]["name"], full["results"][0]["email"]) == ("Anna Schmidt", "anna.schmidt@example.com")
    entry = AuditEntry.objects.get(action="segment.members_viewed")
    assert (entry.actor, entry.object_id, entry.details["rows"]) == (cast["cora"], "germans", 1)
    page = client.get(reverse("segments:detail", args=["germans"])).content.decode()
    assert "Anna Schmidt" in page
    client.force_login(cast["alice"])
    assert "Anna Schmidt" not in client.get(reverse("segments:detail", args=["germans"])).content.decode()


def test_export_is_masked_per_role_audited_and_safe_from_formulas(client, cast, owned):
    w = World()
    evil = w.profile(country="DE", city="+49 city", first_name="=HYPERLINK(\"http://x\")", last_name="-1")
    Membership.objects.create(segment=owned, profile_id=evil, version_from=owned.membership_version,
                              entered_at=owned.computed_at)
    Segment.objects.filter(pk=owned.pk).update(member_count=2)

    def export(username):
        client.force_login(cast[username])
        response = client.get(reverse("segments:export", args=["germans"]))
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    rows = export("dan")
    assert rows[0] == ["profile_id", "name", "email", "country", "city", "entered_at", "last_seen_at"]
    assert len(rows) == 3
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id[str(evil)][1:5] == ["'=HYPERLINK(\"http://x\") -1", "", "DE", "'+49 city"]
    masked = {row[0]: row[1:5] for row in export("alice")[1:]}
    assert masked[str(evil)] == ["'=*** -***", "", "DE", "'+***"]
    assert sorted(AuditEntry.objects.filter(action="segment.exported").values_list("actor__username", "details")) == [
        ("alice", {"rows": 2, "masked": True, "required_purposes": []}),
        ("dan", {"rows": 2, "masked": False, "required_purposes": []})]


def test_crud_rules_keys_archive_and_restore(client, cast, owned):
    client.force_login(cast["alice"])
    json = {"content_type": "application/json"}
    duplicate = client.post("/api/segments/", {"key": "germans", "name": "Again", "definition": DE}, **json)
    assert duplicate.status_code == 400 and duplicate.json() == {
        "code": "duplicate_key", "message": "A segment with the key 'germans' already exists.", "field": "key"}
    for bad in ("Germans", "x", "a-b", "templates", "1abc"):
        assert client.post("/api/segments/", {"key": bad, "name": "N", "definition": DE}, **json).json()["code"] == "invalid_key"
    assert client.post("/api/segments/", {"key": "no_name", "definition": DE}, **json).json()["code"] == "missing_name"
    assert client.post("/api/segments/", {"key": "no_def", "name": "N"}, **json).json()["code"] == "missing_definition"
    bad_schedule = client.post("/api/segments/", {"key": "sched", "name": "N", "definition": DE, "schedule_minutes": 2}, **json)
    assert bad_schedule.json()["code"] == "invalid_schedule"
    moved = client.patch("/api/segments/germans/", {"key": "deutsche"}, **json)
    assert moved.status_code == 400 and moved.json()["code"] == "key_immutable"
    changed = client.patch("/api/segments/germans/", {"definition": definition(
        {"type": "trait", "field": "country", "operator": "in", "value": ["DE", "AT"]})}, **json).json()
    assert changed["definition_version"] == 2
    assert changed["sentence"] == "People who match: country is one of “DE”, “AT”."
    assert client.delete("/api/segments/germans/").status_code == 204
    assert client.get("/api/segments/").json()["results"] == []
    assert [r["key"] for r in client.get("/api/segments/?archived=1").json()["results"]] == ["germans"]
    restored = client.post("/api/segments/germans/restore/").json()
    assert restored["is_active"] is True
    assert Segment.objects.filter(key__in=["sched", "no_name", "no_def"]).count() == 0


def test_list_search_and_sort(client, cast, owned):
    client.force_login(cast["alice"])
    for key, size in (("alpha", 5), ("zeta", 50)):
        segment = segment_create(actor=cast["alice"], key=key, name=key.title(), definition=DE,
                                 description="about beta" if key == "zeta" else "")
        Segment.objects.filter(pk=segment.pk).update(member_count=size, status="ok")
    keys = lambda params: [r["key"] for r in client.get("/api/segments/", params).json()["results"]]  # noqa: E731
    assert keys({}) == ["alpha", "germans", "zeta"]
    assert keys({"sort": "-size"}) == ["zeta", "alpha", "germans"]
    assert keys({"q": "beta"}) == ["zeta"]
    page = client.get(reverse("segments:list"), {"q": "germ"}).content.decode()
    assert 'data-key="germans"' in page and 'data-key="alpha"' not in page
    assert 'data-testid="size-germans">1<' in page


def test_static_segment_upload_reports_rows_that_match_nobody(client, cast):
    w = World()
    anna, ben = w.profile(), w.profile()
    w.identity(anna, "email", "anna@example.com")
    w.identity(ben, "user_id", "u-ben")
    client.force_login(cast["alice"])
    json = {"content_type": "application/json"}
    created = client.post("/api/segments/", {"key": "vips", "name": "VIPs", "kind": "static"}, **json)
    assert created.status_code == 201 and created.json()["status"] == "ok"
    report = client.post("/api/segments/vips/upload/", {"members": [
        {"email": "ANNA@example.com"}, {"user_id": "nobody"}, {"phone": "abc"}, {"shoe_size": "42"},
        {"profile_id": str(ben)}, {"email": "anna@example.com", "user_id": "u-ben"}]}, **json).json()
    assert report == {"rows": 6, "matched": 2, "size": 2, "entered": 2, "exited": 0, "problems": [
        {"row": 2, "reason": "no profile has this identifier"}, {"row": 3, "reason": "not a usable phone"},
        {"row": 4, "reason": "unknown identifier kind 'shoe_size'"}, {"row": 6, "reason": "unknown identifier kind '(several)'"}]}
    upload = io.BytesIO(b"user_id,email\nu-ben,\n,nobody@example.com\n")
    upload.name = "list.csv"
    response = client.post(reverse("segments:upload", args=["vips"]), {"file": upload, "mode": "replace"})
    assert response.status_code == 302
    assert set(Membership.objects.filter(segment__key="vips", version_to__isnull=True)
               .values_list("profile_id", flat=True)) == {ben}
    assert AuditEntry.objects.filter(action="segment.members_uploaded").count() == 2
    refused = client.post("/api/segments/vips/upload/", {"members": []}, **json)
    assert refused.status_code == 400


def test_webhook_urls_to_private_addresses_are_refused_on_save(client, cast):
    client.force_login(cast["alice"])
    for url in ("http://127.0.0.1/hook", "http://localhost:8000/x", "http://10.1.2.3/", "http://169.254.169.254/latest",
                "ftp://example.com/", "http://user:pw@example.com/"):
        response = client.post("/api/segments/", {"key": "hooked", "name": "Hooked", "definition": DE,
                                                  "webhook_url": url}, content_type="application/json")
        assert response.status_code == 400, url
        assert response.json()["code"] == "webhook_refused"
    assert not Segment.objects.filter(key="hooked").exists()


def test_openapi_schema_documents_the_segments_api(client, cast):
    client.force_login(cast["root"])
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/segments/", "/api/segments/{key}/", "/api/segments/{key}/diff/", "/api/segments/preview/",
                 "/api/segments/{key}/members/", "/api/segments/{key}/recompute/"):
        assert path in text
