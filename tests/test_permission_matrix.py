"""Who may do what: every screen and endpoint that exists today × every role and key, in ONE
table. A denied action also leaves everything as it was. (Phase 2 adds the endpoints of
ingestion, identity, segments and content as they land.)"""

import base64

import orjson
import pytest

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
from profiles.models import Identity, Profile, SourceKey
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

CONSENT_BODY = {"userId": "u-matrix", "purposes": {"analytics": True}}

# (name, method, url, body, expected per actor)
MATRIX = [
    ("dashboard", "GET", "/", None, SIGNED_IN),
    ("profile list", "GET", "/profiles/", None, PROFILES),
    ("profile detail", "GET", "/profiles/{profile}/", None, PROFILES),
    ("imports", "GET", "/profiles/imports/", None, PROFILES),  # compliance reads the history
    ("segment list", "GET", "/segments/", None, SIGNED_IN),
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
]

CASES = [(name, method, url, body, actor, expected[actor]) for name, method, url, body, expected in MATRIX
         for actor in ACTORS]


@pytest.fixture
def world(users, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    ada = make_person(email="ada@example.com")
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
    values = {"profile": ada.id, "record": ConsentRecord.objects.first().sequence, "access": access.pk,
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
        assert _snapshot() == before
        if url.startswith(("/v1/", "/api/")):
            payload = response.json()
            assert payload["code"] and payload["message"]
