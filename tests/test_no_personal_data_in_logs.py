"""Exercise the consent flows end to end and scan everything logged for the test subject's
identifiers. The redaction filter is switched off, so what is checked is what the code logs."""

import base64
import logging

import orjson
import pytest
from django.core.management import call_command

from cdp import apikeys
from cdp.logging import RedactPersonalData
from consent.models import DataSubjectRequest
from consent.services import inputs, requests
from profiles.models import SourceKey
from tests.consent_helpers import make_person, source

SUBJECT = {"email": "wilhelmina.quast@example.org", "phone": "+33 6 12 34 56 78", "user_id": "usr-wq-99321",
           "anonymous_id": "anon-wq-77001"}
NEEDLES = ["wilhelmina", "quast", "+33612345678", "612345678", "usr-wq-99321", "anon-wq-77001", "198.51.100.23",
           "Wilhelmina", "Quastenberg"]


@pytest.fixture
def raw_logs(caplog, monkeypatch):
    monkeypatch.setattr(RedactPersonalData, "filter", lambda self, record: True)
    caplog.set_level(logging.DEBUG)
    return caplog


def _logged(caplog) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.extend(str(value) for key, value in vars(record).items() if key not in {"msg", "args", "message"})
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts).lower()


def test_consent_and_request_flows_log_no_personal_data(raw_logs, client, users, settings, tmp_path, capsys):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CDP_CONSENT_HEAD_DIR = tmp_path / "heads"
    profile = make_person(**SUBJECT, first_name="Wilhelmina", last_name="Quastenberg")
    _, key = apikeys.source_key_create(source=source(), kind=SourceKey.Kind.WRITE)
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()

    def post(body):
        return client.post("/v1/consent", orjson.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=auth, REMOTE_ADDR="198.51.100.23")

    assert post({"identifier": {"kind": "email", "value": SUBJECT["email"]}, "purposes": {"analytics": True},
                 "context": {"ip": "198.51.100.23", "page": {"url": "https://x.example/?u=usr-wq-99321"}}}
                ).status_code == 200
    assert post({"identifier": {"kind": "email", "value": "wilhelmina.quast@"}, "purposes": {"analytics": True}}
                ).status_code == 400
    assert post({"userId": SUBJECT["user_id"], "purposes": {"telepathy": True}}).status_code == 400
    inputs.consent_from_segment_messages(messages=[{
        "type": "track", "userId": SUBJECT["user_id"], "anonymousId": SUBJECT["anonymous_id"],
        "context": {"consent": {"categoryPreferences": {"Analytics": True}}, "ip": "198.51.100.23"}}])
    inputs.consent_from_import_rows(rows=[
        inputs.ImportConsentRow(2, "phone", SUBJECT["phone"], "newsletter", "yes", "2026-01-02"),
        inputs.ImportConsentRow(3, "email", "wilhelmina.quast@", "newsletter", "yes", ""),
    ], actor=users["dan"])

    client.force_login(users["cora"])
    assert client.get("/consent/ledger/", {"q": SUBJECT["email"]}).status_code == 200
    assert client.get("/consent/person/", {"q": SUBJECT["phone"]}).status_code == 200
    assert client.post(f"/consent/person/?q={SUBJECT['user_id']}&kind=user_id",
                       {"purpose_personalization": "withdraw"}).status_code == 302
    access = requests.dsr_create(type="access", identifier_kind="email", identifier=SUBJECT["email"],
                                 actor=users["cora"])
    requests.dsr_assign(request=access, actor=users["cora"])
    requests.dsr_access_export(request_id=access.pk)
    assert client.get(f"/consent/requests/{access.pk}/download/").status_code == 200
    requests.profile_rectify(profile_id=profile.id, changes={"last_name": "Quast"}, actor=users["dan"])
    assert client.post("/consent/requests/", {"type": "erasure", "identifier_kind": "email",
                                              "identifier": SUBJECT["email"]}).status_code == 302
    erasure = DataSubjectRequest.objects.get(type="erasure")
    assert client.post(f"/consent/requests/{erasure.pk}/erase/", {"confirm": erasure.reference}).status_code == 302
    assert client.get("/consent/audit/export.csv").status_code == 200
    call_command("verify_consent_ledger")
    call_command("rotate_encryption_key")

    logged = _logged(raw_logs) + capsys.readouterr().err.lower()
    assert len(raw_logs.records) > 10  # the flows did log: ids, counts and reasons
    found = [needle for needle in NEEDLES if needle.lower() in logged]
    assert found == []
