"""Compliance screens through Django's test client: filters, empty states, exports, forms."""

import csv
import io

import pytest

from consent.models import AuditEntry, CmpCategoryMapping, ConsentRecord, DataSubjectRequest, NoticeVersion
from consent.services import ledger
from consent.services.inputs import evidence_from
from tests.consent_helpers import decide, make_person, superuser_sql


@pytest.fixture
def ledger_data(users):
    notice = NoticeVersion.objects.create(key="web-banner", version="7", language="en", title="Cookies",
                                          controllers=["Shop Ltd"], text="We and our partners use cookies.")
    ada = make_person(email="ada@example.com", anonymous_id="anon-ada")
    make_person(email="bob@example.com")
    decide("email", "ada@example.com", {"analytics": True, "email_marketing": True}, notice=notice.pk)
    decide("anonymous_id", "anon-ada", {"personalization": True}, notice=notice.pk)
    decide("email", "bob@example.com", {"analytics": False})
    decide("user_id", "=cmd|'/C calc'!A0", {"analytics": True}, evidence=evidence_from(user_agent="=HYPERLINK(1)"))
    return {"ada": ada, "notice": notice}


def test_ledger_filters_by_person_via_any_identifier_and_by_purpose(client, users, ledger_data):
    client.force_login(users["cora"])
    page = client.get("/consent/ledger/", {"q": " ADA@example.com "}).context["page"]
    assert sorted(r.purpose.key for r in page.object_list) == ["analytics", "email_marketing", "personalization"]
    page = client.get("/consent/ledger/", {"q": "anon-ada", "purpose": "analytics"}).context["page"]
    assert [r.purpose.key for r in page.object_list] == ["analytics"]  # same person, found by another identifier
    page = client.get("/consent/ledger/", {"q": str(ledger_data["ada"].id)}).context["page"]
    assert page.paginator.count == 3
    response = client.get("/consent/ledger/", {"q": "nobody@example.com"})
    assert response.context["page"].paginator.count == 0
    assert "No consent records for that person" in response.content.decode()
    response = client.get("/consent/ledger/", {"granted": "no"})
    assert [r.purpose.key for r in response.context["page"].object_list] == ["analytics"]
    response = client.get("/consent/ledger/", {"date_from": "not a date"})
    assert response.status_code == 200 and "Some filters were not understood" in response.content.decode()
    entry = AuditEntry.objects.filter(action="consent.ledger_searched").first()
    assert entry.actor == users["cora"] and "ada" not in str(entry.details)


def test_record_detail_shows_the_notice_text_and_chain(client, users, ledger_data):
    client.force_login(users["cora"])
    record = ConsentRecord.objects.get(purpose__key="email_marketing")
    body = client.get(f"/consent/ledger/{record.sequence}/").content.decode()
    assert "We and our partners use cookies." in body
    assert ledger_data["notice"].text_sha256 in body and bytes(record.record_hash).hex() in body
    assert str(ledger_data["ada"].id) in body  # linked profile
    assert client.get("/consent/ledger/9999/").status_code == 404


def test_ledger_csv_export_is_filtered_and_escaped(client, users, ledger_data):
    client.force_login(users["cora"])
    response = client.get("/consent/ledger/export.csv", {"purpose": "analytics"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode().lstrip("\ufeff"))))
    assert rows[0][:4] == ["sequence", "captured_at", "decided_at", "client_timestamp"]
    assert [row[6] for row in rows[1:]] == ["analytics"] * 3
    assert "'=HYPERLINK(1)" in [row[12] for row in rows[1:]]
    assert AuditEntry.objects.filter(action="consent.ledger_exported", actor=users["cora"]).count() == 1


def test_verify_screen_reports_the_first_broken_record(client, users, ledger_data, settings, tmp_path):
    settings.CDP_CONSENT_HEAD_DIR = tmp_path
    client.force_login(users["cora"])
    assert "Intact: 5 records checked" in client.post("/consent/verify/").content.decode()
    superuser_sql("UPDATE consent_consentrecord SET granted = NOT granted WHERE sequence = 3")
    body = client.post("/consent/verify/").content.decode()
    assert 'Broken at record <a href="/consent/ledger/3/">#3</a>' in body
    assert "broken at 3" in client.get("/consent/verify/").content.decode()
    assert ledger.ledger_verify().first_broken.sequence == 3


def test_staff_record_a_persons_consent(client, users, ledger_data):
    client.force_login(users["cora"])
    response = client.get("/consent/person/", {"q": "ada@example.com"})
    states = {s["purpose"]: (s["granted"], s["decided"]) for s in response.context["states"]}
    assert states["analytics"] == (True, True) and states["advertising"] == (False, False)
    response = client.post("/consent/person/?q=ada@example.com", {"purpose_analytics": "withdraw",
                                                                  "notice": ledger_data["notice"].pk,
                                                                  "note": "phone call"})
    assert response.status_code == 302
    record = ConsentRecord.objects.order_by("-sequence").first()
    assert (record.granted, record.source, record.actor, record.subject_kind) == (False, "staff", users["cora"],
                                                                                  "profile_id")
    assert record.details == {"note": "phone call"}
    response = client.post("/consent/person/?q=ada@example.com", {})
    assert "Choose grant or withdraw for at least one purpose." in response.content.decode()
    assert "No profile has that identifier" in client.get("/consent/person/", {"q": "who@example.com"}).content.decode()


def test_mappings_screen_adds_refuses_duplicates_and_removes(client, users):
    client.force_login(users["cora"])
    before = CmpCategoryMapping.objects.count()
    purpose = ConsentRecord._meta.get_field("purpose").related_model.objects.get(key="analytics")
    assert client.post("/consent/mappings/", {"cmp": "onetrust", "category": "C0002", "purpose": purpose.pk}
                       ).status_code == 302
    response = client.post("/consent/mappings/", {"cmp": "onetrust", "category": "c0002", "purpose": purpose.pk})
    assert "This mapping exists already." in response.content.decode()
    assert CmpCategoryMapping.objects.count() == before + 1
    mapping = CmpCategoryMapping.objects.get(cmp="onetrust")
    assert client.post(f"/consent/mappings/{mapping.pk}/delete/").status_code == 302
    assert CmpCategoryMapping.objects.count() == before


def test_request_queue_workflow_through_the_screens(client, users, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    make_person(email="ada@example.com", first_name="Ada")
    client.force_login(users["cora"])
    response = client.post("/consent/requests/", {"type": "rectification", "identifier_kind": "email",
                                                  "identifier": "not-an-email"})
    assert "Identifier: the email given is not usable" in response.content.decode()
    assert DataSubjectRequest.objects.count() == 0
    response = client.post("/consent/requests/", {"type": "rectification", "identifier_kind": "email",
                                                  "identifier": "ada@example.com"})
    dsr = DataSubjectRequest.objects.get()
    assert response["Location"] == f"/consent/requests/{dsr.pk}/"
    page = client.get("/consent/requests/").content.decode()
    assert dsr.reference in page and dsr.due_at.strftime("%Y-%m-%d") in page
    response = client.post(f"/consent/requests/{dsr.pk}/rectify/", {})
    assert response.status_code == 400 and "Fill in the corrected values" in response.content.decode()
    client.post(f"/consent/requests/{dsr.pk}/rectify/", {"first_name": "Augusta"})
    dsr.refresh_from_db()
    assert (dsr.status, dsr.outcome, dsr.handler) == ("completed", "rectified: first_name", users["cora"])
    response = client.post(f"/consent/requests/{dsr.pk}/reject/", {"reason": "late"}, follow=True)
    assert "this request is already closed" in response.content.decode()


def test_erasure_needs_the_reference_typed_to_confirm(client, users):
    ada = make_person(email="ada@example.com")
    client.force_login(users["cora"])
    client.post("/consent/requests/", {"type": "erasure", "identifier_kind": "email", "identifier": "ada@example.com"})
    dsr = DataSubjectRequest.objects.get()
    response = client.post(f"/consent/requests/{dsr.pk}/erase/", {"confirm": "yes"})
    assert response.status_code == 400 and f"Type {dsr.reference} to confirm" in response.content.decode()
    assert type(ada).objects.filter(id=ada.id).exists()
    response = client.post(f"/consent/requests/{dsr.pk}/erase/", {"confirm": dsr.reference.lower()}, follow=True)
    assert "Done: receipt" in response.content.decode()
    assert not type(ada).objects.filter(id=ada.id).exists()
    body = client.get(f"/consent/requests/{dsr.pk}/").content.decode()
    assert "profiles.Identity" in body and "removed (erased)" in body


def test_audit_log_filters_and_exports(client, users, ledger_data):
    from consent.services.audit import audit_record

    audit_record(actor=users["dan"], action="profile.viewed", object_type="profile", object_id="p-1")
    audit_record(actor=users["cora"], action="segment.exported", object_type="segment", object_id="=evil")
    client.force_login(users["cora"])
    page = client.get("/consent/audit/", {"actor": "dan"}).context["page"]
    assert [e.action for e in page.object_list] == ["profile.viewed"]
    page = client.get("/consent/audit/", {"action": "segment."}).context["page"]
    assert [e.object_id for e in page.object_list] == ["=evil"]
    response = client.get("/consent/audit/export.csv", {"object_type": "segment"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode().lstrip("\ufeff"))))
    assert rows[1][5] == "'=evil"


def test_empty_states(client, users):
    client.force_login(users["cora"])
    assert "No consent records yet" in client.get("/consent/ledger/").content.decode()
    assert "No requests." in client.get("/consent/requests/").content.decode()
    assert "No notice versions yet" in client.get("/consent/").content.decode()
    assert "Never verified." in client.get("/consent/verify/").content.decode()


def test_a_persons_history_includes_decisions_of_profiles_merged_into_it(client, users):
    from consent.services.state import consent_profiles_merge
    from tests.consent_helpers import decide_for_profile

    survivor = make_person(email="a@example.com")
    absorbed = make_person(email="b@example.com")
    decide_for_profile(survivor, {"personalization": True})
    decide_for_profile(absorbed, {"personalization": False})
    consent_profiles_merge(survivor_id=survivor.id, absorbed_ids=[absorbed.id])
    client.force_login(users["cora"])
    response = client.get("/consent/person/", {"q": "a@example.com"})
    assert [(r.sequence, r.granted) for r in response.context["history"]] == [(3, False), (2, False), (1, True)]
    states = {s["purpose"]: (s["granted"], s["conflict"]) for s in response.context["states"]}
    assert states["personalization"] == (False, True)
    assert "merge conflict" in response.content.decode()
