"""Who may do what: every screen and endpoint that exists today × every role and key, in ONE
table, for every app: profiles, identity, sources, imports, segments, content, consent, the
client APIs (ingestion, lookup, decide) and the staff APIs. A denied action also leaves
everything as it was; "not yours" is a 404. Read keys only read lookups / decide, write keys only
write events and consent; neither opens a staff endpoint."""

import base64

import orjson
import pytest
from django.utils import timezone
from guardian.models import UserObjectPermission

from cdp import apikeys
from consent.models import (
    AuditEntry,
    CmpCategoryMapping,
    ConsentRecord,
    DataSubjectRequest,
    ErasureReceipt,
    ProfileConsent,
    SubjectConsent,
)
from consent.services import requests
from content.models import Exposure, Slot
from profiles.models import (
    BlockedIdentifier,
    Event,
    Identity,
    IdentityFlag,
    IdentityLink,
    ImportJob,
    ImportRowError,
    Profile,
    RejectedEvent,
    Source,
    SourceKey,
)
from segments.models import Segment, SegmentRun
from segments.services.definitions import segment_create
from tests.consent_helpers import decide, make_person, source

ACTORS = ("anonymous", "alice", "dan", "cora", "mallory", "root", "write_key", "read_key")
L = "login"  # redirected to the login page
# Shorthands for rows whose columns follow one rule.
SIGNED_IN = dict(anonymous=L, alice=200, dan=200, cora=200, mallory=403, root=200, write_key=L, read_key=L)
PROFILES = dict(anonymous=L, alice=403, dan=200, cora=200, mallory=403, root=200, write_key=L, read_key=L)
DATA_TEAM = dict(anonymous=L, alice=403, dan=200, cora=403, mallory=403, root=200, write_key=L, read_key=L)
CONTENT = dict(anonymous=L, alice=200, dan=403, cora=200, mallory=403, root=200, write_key=L, read_key=L)
COMPLIANCE = dict(anonymous=L, alice=403, dan=403, cora=200, mallory=403, root=200, write_key=L, read_key=L)
COMPLIANCE_POST = {**COMPLIANCE, "cora": 302, "root": 302}
CONSENT_WRITE = dict(anonymous=401, alice=403, dan=403, cora=200, mallory=403, root=200, write_key=200, read_key=403)
STAFF_API = dict(anonymous=403, alice=403, dan=403, cora=200, mallory=403, root=200, write_key=403, read_key=403)
PROFILE_API = {**STAFF_API, "dan": 200}
ADMIN = dict(anonymous=L, alice=L, dan=L, cora=L, mallory=L, root=200, write_key=L, read_key=L)
DATA_TEAM_POST = {**DATA_TEAM, "dan": 302, "root": 302}
IDENTITY_READ = PROFILES
SEGMENT_MINE = dict(anonymous=L, alice=200, dan=200, cora=200, mallory=403, root=200, write_key=L, read_key=L)
SEGMENT_THEIRS = {**SEGMENT_MINE, "alice": 404}  # owned by root, not shared with alice
SEGMENT_CREATE = dict(anonymous=L, alice=200, dan=403, cora=403, mallory=403, root=200, write_key=L, read_key=L)
SEGMENT_CHANGE_MINE = dict(anonymous=L, alice=302, dan=403, cora=403, mallory=403, root=302, write_key=L,
                           read_key=L)
SEGMENT_CHANGE_THEIRS = {**SEGMENT_CHANGE_MINE, "alice": 404}
SEGMENT_API = dict(anonymous=403, alice=200, dan=200, cora=200, mallory=403, root=200, write_key=403,
                   read_key=403)
SEGMENT_API_CREATE = {**SEGMENT_API, "alice": 201, "dan": 403, "cora": 403, "root": 201}
SEGMENT_API_THEIRS = {**SEGMENT_API, "alice": 404}
IMPORTS_API = {**STAFF_API, "cora": 200, "dan": 200}
IMPORTS_API_WRITE = {**STAFF_API, "cora": 403, "dan": 200}
WRITE_KEY_ONLY = dict(anonymous=401, alice=401, dan=401, cora=401, mallory=401, root=401, write_key=200,
                      read_key=401)
READ_KEY_ONLY = dict(anonymous=401, alice=401, dan=401, cora=401, mallory=401, root=401, write_key=401,
                     read_key=200)

CONSENT_BODY = {"userId": "u-matrix", "purposes": {"analytics": True}}

# (name, method, url, body, expected per actor)
MATRIX = [
    ("dashboard", "GET", "/", None, SIGNED_IN),
    ("profile list", "GET", "/profiles/", None, PROFILES),
    ("profile detail", "GET", "/profiles/{profile}/", None, PROFILES),
    ("imports", "GET", "/profiles/imports/", None, PROFILES),  # compliance reads the history
    ("rectify form", "GET", "/profiles/{profile}/rectify/", None, {**DATA_TEAM, "cora": 403}),
    ("rectify", "POST", "/profiles/{profile}/rectify/", {"city": "Paris"}, {**DATA_TEAM_POST, "cora": 403}),
    ("unmerge", "POST", "/profiles/{profile}/links/{link}/unmerge/", {"reason": "two people", "confirm": "on"},
     DATA_TEAM_POST),
    ("why view", "GET", "/profiles/identity/why/?a={email_id}&b={anon_id}", None,
     IDENTITY_READ),
    ("identity flags", "GET", "/profiles/identity/flags/", None, IDENTITY_READ),
    ("link flagged", "POST", "/profiles/identity/flags/{flag}/link/", {}, DATA_TEAM_POST),
    ("dismiss flagged", "POST", "/profiles/identity/flags/{flag}/dismiss/", {}, DATA_TEAM_POST),
    ("blocked values", "GET", "/profiles/identity/blocked/", None, IDENTITY_READ),
    ("block a value", "POST", "/profiles/identity/blocked/", {"kind": "email", "match": "exact",
                                                              "value": "trap@example.net"}, DATA_TEAM_POST),
    ("toggle blocked", "POST", "/profiles/identity/blocked/{blocked}/toggle/", {}, DATA_TEAM_POST),
    ("requeue unattributed", "POST", "/profiles/identity/unattributed/requeue/", {}, DATA_TEAM_POST),
    ("sources", "GET", "/profiles/sources/", None, DATA_TEAM),
    ("new source form", "GET", "/profiles/sources/new/", None, DATA_TEAM),
    ("create source", "POST", "/profiles/sources/new/", {"name": "App", "kind": "mobile"}, {**DATA_TEAM, "dan": 200,
                                                                                             "root": 200}),
    ("source detail", "GET", "/profiles/sources/{source}/", None, DATA_TEAM),
    ("edit source", "POST", "/profiles/sources/{source}/edit/", {"allowed_origins": "https://shop.example",
                                                                 "is_active": "on"}, DATA_TEAM_POST),
    ("new key", "POST", "/profiles/sources/{source}/keys/new/", {"kind": "read"}, DATA_TEAM),
    ("rotate key", "POST", "/profiles/sources/{source}/keys/{write_id}/rotate/", {}, DATA_TEAM),
    ("revoke key", "POST", "/profiles/sources/{source}/keys/{write_id}/revoke/", {}, DATA_TEAM_POST),
    ("rejected events", "GET", "/profiles/sources/rejected/", None, DATA_TEAM),
    ("rejected event", "GET", "/profiles/sources/rejected/{rejected}/", None, DATA_TEAM),
    ("replay rejected", "POST", "/profiles/sources/rejected/{rejected}/replay/", {}, DATA_TEAM_POST),
    ("upload without a file", "POST", "/profiles/imports/upload/", {"kind": "crm"}, {**DATA_TEAM, "dan": 400,
                                                                                   "root": 400}),
    ("import detail", "GET", "/profiles/imports/{job}/", None, PROFILES),
    ("import progress", "GET", "/profiles/imports/{job}/progress/", None, PROFILES),
    ("import errors csv", "GET", "/profiles/imports/{ended}/errors.csv", None, PROFILES),
    ("import mapping", "GET", "/profiles/imports/{job}/mapping/", None, DATA_TEAM_POST),  # no file: to the job
    ("cancel import", "POST", "/profiles/imports/{job}/cancel/", {}, DATA_TEAM_POST),
    ("segment list", "GET", "/segments/", None, SIGNED_IN),
    ("segment builder", "GET", "/segments/new/", None, SEGMENT_CREATE),
    ("my segment", "GET", "/segments/mine/", None, SEGMENT_MINE),
    ("their segment", "GET", "/segments/theirs/", None, SEGMENT_THEIRS),
    ("segment status", "GET", "/segments/theirs/status/", None, SEGMENT_THEIRS),
    ("segment export", "GET", "/segments/theirs/export.csv", None, SEGMENT_THEIRS),
    ("edit my segment", "GET", "/segments/mine/edit/", None, {**SEGMENT_CHANGE_MINE, "alice": 200, "root": 200}),
    ("recompute mine", "POST", "/segments/mine/recompute/", {}, SEGMENT_CHANGE_MINE),
    ("recompute theirs", "POST", "/segments/theirs/recompute/", {}, SEGMENT_CHANGE_THEIRS),
    ("archive mine", "POST", "/segments/mine/archive/", {}, SEGMENT_CHANGE_MINE),
    ("archive theirs", "POST", "/segments/theirs/archive/", {}, SEGMENT_CHANGE_THEIRS),
    ("share mine", "POST", "/segments/mine/share/", {"target": "user:cora", "level": "view"}, SEGMENT_CHANGE_MINE),
    ("content blocks", "GET", "/content/", None, CONTENT),
    ("experiments", "GET", "/content/experiments/", None, CONTENT),
    ("consent overview", "GET", "/consent/", None, COMPLIANCE),
    ("ledger", "GET", "/consent/ledger/?q=ada@example.com", None, COMPLIANCE),
    ("ledger csv", "GET", "/consent/ledger/export.csv", None, COMPLIANCE),
    ("ledger record", "GET", "/consent/ledger/{record}/", None, COMPLIANCE),
    ("verify chain", "POST", "/consent/verify/", {}, COMPLIANCE),
    ("person consent", "GET", "/consent/person/?q=ada@example.com", None, COMPLIANCE),
    ("record consent", "POST", "/consent/person/?q=ada@example.com", {"purpose_analytics": "withdraw"},
     COMPLIANCE_POST),
    ("cmp mappings", "GET", "/consent/mappings/", None, COMPLIANCE),
    ("add mapping", "POST", "/consent/mappings/", {"cmp": "x", "category": "y", "purpose": "{purpose}"},
     COMPLIANCE_POST),
    ("remove mapping", "POST", "/consent/mappings/{mapping}/delete/", {}, COMPLIANCE_POST),
    ("request queue", "GET", "/consent/requests/", None, COMPLIANCE),
    ("register request", "POST", "/consent/requests/",
     {"type": "access", "identifier_kind": "email", "identifier": "ada@example.com"}, COMPLIANCE_POST),
    ("request detail", "GET", "/consent/requests/{access}/", None, COMPLIANCE),
    ("request download", "GET", "/consent/requests/{access}/download/", None, COMPLIANCE),
    ("assign request", "POST", "/consent/requests/{erasure}/assign/", {}, COMPLIANCE_POST),
    ("reject request", "POST", "/consent/requests/{erasure}/reject/", {"reason": "no id"}, COMPLIANCE_POST),
    ("erase person", "POST", "/consent/requests/{erasure}/erase/", {"confirm": "{erasure_ref}"},
     COMPLIANCE_POST),
    ("audit log", "GET", "/consent/audit/", None, COMPLIANCE),
    ("audit csv", "GET", "/consent/audit/export.csv", None, COMPLIANCE),
    ("api: set consent", "POST", "/v1/consent", CONSENT_BODY, CONSENT_WRITE),
    ("api: withdraw consent", "POST", "/v1/consent/withdraw", {"userId": "u-matrix", "all": True}, CONSENT_WRITE),
    ("api: profile consent", "GET", "/api/consent/profiles/{profile}", None, PROFILE_API),
    ("api: ledger records", "GET", "/api/consent/records", None, STAFF_API),
    ("api: request list", "GET", "/api/consent/requests", None, STAFF_API),
    ("api: create request", "POST", "/api/consent/requests",
     {"type": "erasure", "identifier": {"kind": "email", "value": "ada@example.com"}},
     {**STAFF_API, "cora": 201, "root": 201}),
    ("api: request detail", "GET", "/api/consent/requests/{access}", None, STAFF_API),
    ("admin: ledger", "GET", "/admin/consent/consentrecord/", None, ADMIN),
    ("api: segments", "GET", "/api/segments/", None, SEGMENT_API),
    ("api: their segment", "GET", "/api/segments/theirs/", None, SEGMENT_API_THEIRS),
    ("api: their members", "GET", "/api/segments/theirs/members/", None, SEGMENT_API_THEIRS),
    ("api: create segment", "POST", "/api/segments/", {"key": "new_one", "name": "New", "definition": {
        "version": 1, "root": {"type": "trait", "field": "country", "operator": "=", "value": "DE"}}},
     SEGMENT_API_CREATE),
    ("api: recompute theirs", "POST", "/api/segments/theirs/recompute/", {},
     {**SEGMENT_API_THEIRS, "dan": 403, "cora": 403, "root": 202}),
    ("api: imports", "GET", "/api/imports/", None, IMPORTS_API),
    ("api: import", "GET", "/api/imports/{job}/", None, IMPORTS_API),
    ("api: cancel import", "POST", "/api/imports/{job}/cancel/", {}, {**IMPORTS_API_WRITE, "dan": 202, "root": 202}),
    ("api: import mappings", "GET", "/api/import-mappings/", None, IMPORTS_API_WRITE),
    ("ingest: track", "POST", "/v1/track", {"userId": "u-matrix", "event": "Viewed"}, WRITE_KEY_ONLY),
    ("ingest: batch", "POST", "/v1/batch", {"batch": [{"type": "track", "userId": "u-matrix", "event": "Viewed"}]},
     WRITE_KEY_ONLY),
    ("lookup", "GET", "/v1/segments?email=ada@example.com", None, READ_KEY_ONLY),
    ("lookup bulk", "POST", "/v1/segments/bulk", {"visitors": [{"email": "ada@example.com"}]}, READ_KEY_ONLY),
    ("decide", "POST", "/v1/decide", {"email": "ada@example.com", "slots": ["home_hero"]}, READ_KEY_ONLY),
]

CASES = [(name, method, url, body, actor, expected[actor]) for name, method, url, body, expected in MATRIX
         for actor in ACTORS]


@pytest.fixture
def world(users, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    ada = make_person(email="ada@example.com", anonymous_id="anon-ada")
    decide("email", "ada@example.com", {"analytics": True})
    access = requests.dsr_create(type="access", identifier_kind="email", identifier="ada@example.com",
                                 actor=users["root"])
    requests.dsr_assign(request=access, actor=users["root"])
    requests.dsr_access_export(request_id=access.pk)
    erasure = requests.dsr_create(type="erasure", identifier_kind="email", identifier="ada@example.com",
                                  actor=users["root"])
    mapping = CmpCategoryMapping.objects.first()
    shop = source()
    _, write = apikeys.source_key_create(source=shop, kind=SourceKey.Kind.WRITE)
    _, read = apikeys.source_key_create(source=shop, kind=SourceKey.Kind.READ)
    now = timezone.now()
    email, anon = Identity.objects.filter(profile=ada).order_by("kind")  # anonymous_id, email
    link = IdentityLink.objects.create(identity_a=min(email, anon, key=lambda i: i.pk),
                                       identity_b=max(email, anon, key=lambda i: i.pk), rule="same_message",
                                       first_seen_at=now, last_seen_at=now)
    flag = IdentityFlag.objects.create(key=f"shared_device:{anon.pk}", kind="shared_device", identity=email,
                                       first_seen_at=now, last_seen_at=now)
    blocked = BlockedIdentifier.objects.create(kind="email", value="blocked@example.com")
    rejected = RejectedEvent.objects.create(received_at=now, source=shop, reason="invalid_json",
                                            message="The body is not valid JSON.", raw_body='{"userId": "u-1",')
    job = ImportJob.objects.create(kind="crm", source=shop, file_name="crm.csv", status="mapping")
    ended = ImportJob.objects.create(kind="crm", source=shop, file_name="old.csv", status="failed")
    ImportRowError.objects.create(job=ended, row_number=2, column="email", value="x@", reason="malformed email")
    for owner, key in ((users["alice"], "mine"), (users["root"], "theirs")):
        segment_create(actor=owner, key=key, name=key, definition={"version": 1, "root": {
            "type": "trait", "field": "country", "operator": "=", "value": "DE"}})
    Slot.objects.create(key="home_hero", name="Home hero", default_template="<h1>Hi</h1>")
    values = {"profile": ada.id, "link": link.pk, "flag": flag.pk, "blocked": blocked.pk, "rejected": rejected.pk,
              "job": job.pk, "ended": ended.pk, "email_id": email.pk, "anon_id": anon.pk, "source": shop.pk,
              "write_id": SourceKey.objects.get(source=shop, kind="write").pk,
              "record": ConsentRecord.objects.first().sequence, "access": access.pk,
              "erasure": erasure.pk, "erasure_ref": erasure.reference, "mapping": mapping.pk,
              "purpose": mapping.purpose_id}
    return {"values": values, "keys": {"write_key": write, "read_key": read}}


def _snapshot() -> dict:
    return {
        "records": ConsentRecord.objects.count(),
        "subject_states": sorted(SubjectConsent.objects.values_list("id", "granted")),
        "profile_states": sorted(ProfileConsent.objects.values_list("id", "granted")),
        "requests": sorted(DataSubjectRequest.objects.values_list("id", "status", "handler_id")),
        "mappings": CmpCategoryMapping.objects.count(),
        "profiles": Profile.objects.count(),
        "identities": Identity.objects.count(),
        "receipts": ErasureReceipt.objects.count(),
        "audit": AuditEntry.objects.count(),
        "profile_fields": sorted((str(p), city, str(into)) for p, city, into in
                                 Profile.objects.values_list("id", "city", "merged_into_id")),
        "links": sorted(IdentityLink.objects.values_list("id", "is_active")),
        "flags": sorted(IdentityFlag.objects.values_list("id", "status")),
        "blocked": sorted(BlockedIdentifier.objects.values_list("id", "is_active")),
        "sources": sorted((pk, str(origins)) for pk, origins in Source.objects.values_list("id", "allowed_origins")),
        "keys": sorted((pk, revoked is None) for pk, revoked in SourceKey.objects.values_list("id", "revoked_at")),
        "rejected": sorted(RejectedEvent.objects.values_list("id", "replayed_at")),
        "events": Event.objects.count(),
        "imports": sorted(ImportJob.objects.values_list("id", "status")),
        "segments": sorted((key, active, version) for key, active, version in
                           Segment.objects.values_list("key", "is_active", "definition_version")),
        "runs": SegmentRun.objects.count(),
        "grants": UserObjectPermission.objects.count(),
        "exposures": Exposure.objects.count(),
    }


def _fill(value, values):
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name, method, url, body, actor, expected", CASES,
                         ids=[f"{c[0]}-{c[4]}" for c in CASES])
def test_permission_matrix(client, users, world, name, method, url, body, actor, expected):
    headers = {}
    if actor in users:
        client.force_login(users[actor])
    elif actor in world["keys"]:
        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{world['keys'][actor]}:".encode()).decode()
    url, body = _fill(url, world["values"]), _fill(body, world["values"])
    before = _snapshot()
    if name.startswith("ingest"):  # a refused message is kept in the rejected-events log (issue 3), nothing else
        before.pop("rejected")
    if method == "GET":
        response = client.get(url, **headers)
    elif url.startswith(("/v1/", "/api/")):
        response = client.post(url, orjson.dumps(body), content_type="application/json", **headers)
    else:
        response = client.post(url, body, **headers)
    if expected == L:
        assert response.status_code == 302 and "login" in response["Location"], (response.status_code, url)
    else:
        assert response.status_code == expected, (response.status_code, url)
    if expected in (L, 401, 403):
        after = _snapshot()
        if name.startswith("ingest"):
            after.pop("rejected")
        assert after == before
        if url.startswith(("/v1/", "/api/")):
            payload = response.json()
            assert payload["code"] and payload["message"]
