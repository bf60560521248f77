"""Consent inputs: the REST API for CMPs and back ends, the Segment consent context, import
columns. Bad input gets a 4xx with code and message and records nothing."""

import base64

import orjson
import pytest
from django.test import Client

from cdp import apikeys, crypto
from consent.models import ConsentRecord, NoticeVersion, SubjectConsent
from consent.services import inputs
from profiles.models import SourceKey
from tests.consent_helpers import hash_of, source
from tests.test_tcf import WITH_SEGMENTS


@pytest.fixture
def keys(db):
    shop = source()
    shop.allowed_origins = ["https://shop.example"]
    shop.save()
    write_key, write = apikeys.source_key_create(source=shop, kind=SourceKey.Kind.WRITE)
    _, read = apikeys.source_key_create(source=shop, kind=SourceKey.Kind.READ)
    return {"write": write, "read": read, "write_id": write_key.id}


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def post(client, path, body, key=None, **headers):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    if key:
        headers["HTTP_AUTHORIZATION"] = _basic(key)
    return client.post(path, data, content_type="text/plain", **headers)


def test_a_cmp_sets_purposes_with_the_write_key(client, keys):
    NoticeVersion.objects.create(key="web-banner", version="3", language="en", text="We and our partners ...")
    response = post(client, "/v1/consent", {
        "anonymousId": "anon-1", "purposes": {"analytics": True, "advertising": False}, "method": "save",
        "notice": {"key": "web-banner", "version": "3", "language": "en"}, "timestamp": "2026-11-22T10:00:00Z",
        "context": {"page": {"url": "https://shop.example/cart?email=ada@example.com#x"}, "userAgent": "UA/1"},
    }, keys["write"], REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True and body["unmapped_categories"] == []
    assert {(r["purpose"], r["granted"], r["method"]) for r in body["records"]} == {
        ("analytics", True, "save"), ("advertising", False, "save")}
    assert sorted(r["sequence"] for r in body["records"]) == [1, 2]
    record = ConsentRecord.objects.get(purpose__key="analytics")
    assert (record.source, record.method, record.actor_key_id) == ("web_banner", "save", keys["write_id"])
    assert record.subject_kind == "anonymous_id" and bytes(record.subject_hash) == hash_of("anonymous_id", "anon-1")
    assert record.page_url == "https://shop.example/cart"  # no query string, no fragment
    assert record.user_agent == "UA/1"
    assert bytes(record.ip_hash) == crypto.keyed_hash("ip", "203.0.113.9")
    assert record.notice.version == "3" and record.client_timestamp.isoformat() == "2026-11-22T10:00:00+00:00"


def test_cmp_categories_are_mapped_and_unknown_ones_reported(client, keys):
    response = post(client, "/v1/consent", {"userId": "u-1", "categories": {"C0002": True, "C0004": False,
                                                                             "Mystery": True}}, keys["write"])
    assert response.status_code == 200
    assert response.json()["unmapped_categories"] == ["Mystery"]
    assert dict(ConsentRecord.objects.values_list("purpose__key", "granted")) == {"analytics": True,
                                                                                  "advertising": False}


def test_a_tc_string_is_kept_verbatim_with_its_decoded_purposes(client, keys):
    response = post(client, "/v1/consent", {"userId": "u-2", "tcString": WITH_SEGMENTS}, keys["write"])
    assert response.status_code == 200
    records = {r.purpose.key: r for r in ConsentRecord.objects.select_related("purpose")}
    # TCF purposes 1, 3, 6, 7, 8, 10 consented: analytics needs 8, 9, 10 (9 missing); ads need 2, 3, 4, 7.
    assert {key: r.granted for key, r in records.items()} == {"advertising": False, "analytics": False,
                                                             "personalization": False}
    assert records["analytics"].tc_string == WITH_SEGMENTS
    assert records["analytics"].tcf["purposes_consent"] == [1, 3, 6, 7, 8, 10]
    assert records["analytics"].tcf["cmp_id"] == 123


def test_global_privacy_control_withdraws_sale_and_sharing(client, keys):
    response = post(client, "/v1/consent", {"anonymousId": "a-3", "purposes": {"analytics": True, "advertising": True}},
                    keys["write"], HTTP_SEC_GPC="1")
    assert response.status_code == 200
    assert {(r.purpose.key, r.granted, r.method) for r in ConsentRecord.objects.select_related("purpose")} == {
        ("analytics", True, "accept"), ("advertising", False, "gpc"), ("third_party_sharing", False, "gpc")}


def test_withdraw_endpoint_and_batches(client, keys):
    response = post(client, "/v1/consent", {"batch": [
        {"identifier": {"kind": "email", "value": "Ada@Example.com"}, "purposes": {"email_marketing": True}},
        {"identifier": {"kind": "phone", "value": "+49 151 1234 5678"}, "purposes": {"email_marketing": True}},
    ]}, keys["write"])
    assert response.status_code == 200 and len(response.json()["records"]) == 2
    response = post(client, "/v1/consent/withdraw", {"identifier": {"kind": "email", "value": "ada@example.com"},
                                                     "all": True}, keys["write"])
    assert response.status_code == 200
    assert len(response.json()["records"]) == 5
    state = SubjectConsent.objects.get(subject_kind="email", purpose__key="email_marketing")
    assert state.granted is False
    assert ConsentRecord.objects.filter(granted=False, method="reject").count() == 5


def test_staff_may_record_through_the_api_with_a_session(users, keys):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["cora"])
    client.get("/consent/")
    token = client.cookies["csrftoken"].value
    response = post(client, "/v1/consent", {"userId": "u-9", "purposes": {"analytics": False}},
                    HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    record = ConsentRecord.objects.get()
    assert (record.source, record.actor_id, record.actor_key_id) == ("staff", users["cora"].id, None)


@pytest.mark.parametrize("who, expected, code", [
    ("anonymous", 401, "not_authenticated"),
    ("read key", 403, "permission_denied"),
    ("revoked key", 401, "authentication_failed"),
    ("garbage header", 401, "not_authenticated"),
    ("alice", 403, "permission_denied"),
    ("mallory", 403, "permission_denied"),
])
def test_who_may_not_write_consent(client, users, keys, who, expected, code):
    headers = {}
    if who == "read key":
        headers["HTTP_AUTHORIZATION"] = _basic(keys["read"])
    elif who == "revoked key":
        apikeys.source_key_revoke(key=SourceKey.objects.get(pk=keys["write_id"]))
        headers["HTTP_AUTHORIZATION"] = _basic(keys["write"])
    elif who == "garbage header":
        headers["HTTP_AUTHORIZATION"] = "Basic ###"
    elif who in users:
        client.force_login(users[who])
    response = post(client, "/v1/consent", {"userId": "u-1", "purposes": {"analytics": True}}, **headers)
    assert response.status_code == expected
    assert response.json()["code"] == code and response.json()["message"]
    assert ConsentRecord.objects.count() == 0


@pytest.mark.parametrize("body, code", [
    (b"{not json", "parse_error"),
    (b"[1, 2]", "invalid"),
    ({}, "invalid"),
    ({"userId": "u-1"}, "invalid"),
    ({"purposes": {"analytics": True}}, "invalid"),
    ({"userId": "u-1", "purposes": {"analytics": "yes"}}, "invalid"),
    ({"userId": "u-1", "purposes": ["analytics"]}, "invalid"),
    ({"userId": "u-1", "purposes": {"flying": True}}, "unknown_purpose"),
    ({"identifier": {"kind": "email", "value": "not-an-email"}, "purposes": {"analytics": True}},
     "invalid_identifier"),
    ({"identifier": {"kind": "passport", "value": "X1"}, "purposes": {"analytics": True}}, "invalid"),
    ({"userId": "u-1", "tcString": "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA"}, "invalid_tc_string"),
    ({"userId": "u-1", "purposes": {"analytics": True}, "notice": {"key": "nope", "version": "1"}}, "unknown_notice"),
    ({"userId": "u-1", "purposes": {"analytics": True}, "notice": "v1"}, "invalid_notice"),
    ({"userId": "u-1", "purposes": {"analytics": True}, "timestamp": "yesterday"}, "invalid"),
    ({"userId": "u-1", "purposes": {"analytics": True}, "method": "shrug"}, "invalid"),
    ({"userId": "u-1", "categories": {"Mystery": True}}, "no_purposes"),
    ({"batch": []}, "invalid_batch"),
    ({"batch": [{"userId": "u-1", "purposes": {"analytics": True}}] * 101}, "invalid_batch"),
    ({"batch": [{"userId": "u-1", "purposes": {"analytics": True}}, {"userId": "u-2"}]}, "invalid"),
])
def test_bad_input_gets_a_clear_error_and_records_nothing(client, keys, body, code):
    response = post(client, "/v1/consent", body, keys["write"])
    assert response.status_code == 400, response.content
    payload = response.json()
    assert payload["code"] == code and payload["message"]
    assert ConsentRecord.objects.count() == 0


def test_an_oversized_body_is_refused(client, keys):
    response = post(client, "/v1/consent", b'{"userId": "' + b"x" * 300_000 + b'"}', keys["write"])
    assert response.status_code == 400 and response.json() == {"code": "parse_error",
                                                                "message": "body larger than 256 KB"}
    assert ConsentRecord.objects.count() == 0


def test_cors_for_the_sources_allowed_origin_only(client, keys):
    preflight = client.options("/v1/consent", HTTP_ORIGIN="https://shop.example")
    assert preflight.status_code == 204 and preflight["Access-Control-Allow-Origin"] == "https://shop.example"
    other = client.options("/v1/consent", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in other
    response = post(client, "/v1/consent", {"userId": "u", "purposes": {"analytics": True}}, keys["write"],
                    HTTP_ORIGIN="https://shop.example")
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


# -- the Segment consent context ------------------------------------------------------------------

def _message(preferences, **extra):
    return {"type": "track", "event": "viewed", "anonymousId": "anon-s", "messageId": "m-1",
            "timestamp": "2026-11-22T09:00:00Z",
            "context": {"consent": {"categoryPreferences": preferences}, "ip": "198.51.100.4",
                        "page": {"url": "https://shop.example/p/1?utm_source=mail"}}, **extra}


def test_segment_consent_context_records_only_changes(db):
    first = inputs.consent_from_segment_messages(messages=[
        _message({"Analytics": True, "Advertising": False, "Strictly necessary": True, "Functional": "false"}),
        _message({"Analytics": True, "Advertising": False}, userId="u-s"),
        {"type": "track", "event": "no consent context"}, "not even a dict",
    ])
    assert (first.recorded, first.unchanged, first.unmapped_categories) == (4, 0, ["Strictly necessary"])
    subjects = set(ConsentRecord.objects.values_list("subject_kind", "purpose__key", "granted"))
    assert subjects == {("anonymous_id", "analytics", True), ("anonymous_id", "advertising", False),
                        ("user_id", "analytics", True), ("user_id", "advertising", False)}
    record = ConsentRecord.objects.filter(subject_kind="anonymous_id").first()
    assert (record.source, record.method, record.page_url) == ("web_banner", "save", "https://shop.example/p/1")
    repeat = inputs.consent_from_segment_messages(messages=[_message({"Analytics": True, "Advertising": False})])
    assert (repeat.recorded, repeat.unchanged) == (0, 2)
    change = inputs.consent_from_segment_messages(messages=[_message({"Analytics": False, "Advertising": False})])
    assert (change.recorded, change.unchanged) == (1, 1)
    assert ConsentRecord.objects.count() == 5


# -- import consent columns ----------------------------------------------------------------------

def test_import_columns_report_bad_rows_and_record_the_rest(db, users):
    rows = [
        inputs.ImportConsentRow(2, "email", "ada@example.com", "newsletter", "yes", "2026-03-01"),
        inputs.ImportConsentRow(3, "email", "bob@example.com", "analytics", "0", "2026-03-02T10:00:00Z"),
        inputs.ImportConsentRow(4, "email", "not an email", "analytics", "yes", ""),
        inputs.ImportConsentRow(5, "email", "cy@example.com", "telepathy", "yes", ""),
        inputs.ImportConsentRow(6, "email", "di@example.com", "analytics", "maybe", ""),
        inputs.ImportConsentRow(7, "email", "ed@example.com", "analytics", "yes", "01/03/2026"),
        inputs.ImportConsentRow(8, "email", "fi@example.com", "analytics", "yes", "2999-01-01"),
    ]
    result = inputs.consent_from_import_rows(rows=rows, actor=users["dan"], import_reference="crm-2026-03")
    assert result.recorded == 2 and result.unchanged == 0
    assert [(e.row_number, e.code) for e in result.errors] == [
        (4, "invalid_identifier"), (5, "unknown_purpose"), (6, "invalid_granted"), (7, "invalid_date"),
        (8, "future_date")]
    ada = ConsentRecord.objects.get(purpose__key="email_marketing")
    assert (ada.source, ada.method, ada.decided_at.date().isoformat()) == ("import", "import", "2026-03-01")
    assert ada.details == {"import": "crm-2026-03", "row": 2} and ada.actor_id == users["dan"].id
    again = inputs.consent_from_import_rows(rows=rows[:2], actor=users["dan"], import_reference="crm-2026-03")
    assert (again.recorded, again.unchanged, again.errors) == (0, 2, [])
    assert ConsentRecord.objects.count() == 2
