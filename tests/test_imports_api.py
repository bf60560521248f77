"""REST API of imports: multipart upload for scripts, roles on every endpoint (lists included),
JSON errors with code and message, and an import run end to end."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from profiles.imports import services
from profiles.models import ImportJob, ImportMapping, Profile, Source
from tests.imports_helpers import _import_dir, upload  # noqa: F401 - autouse fixture


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def crm(db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


def _upload(api, source="CRM", content=b"customer_id,city\nC1,Rome\n", **extra):
    return api.post("/api/imports/", {"file": SimpleUploadedFile("crm.csv", content), "kind": "crm", "source": source,
                                      **extra}, format="multipart")


ENDPOINTS = [("get", "/api/imports/"), ("get", "/api/imports/{id}/"), ("get", "/api/imports/{id}/preview/"),
             ("post", "/api/imports/{id}/start/"), ("post", "/api/imports/{id}/cancel/"),
             ("get", "/api/import-mappings/")]
EXPECTED = {  # username -> status per endpoint above
    "alice": [403, 403, 403, 403, 403, 403],
    "mallory": [403, 403, 403, 403, 403, 403],
    "cora": [200, 200, 403, 403, 403, 403],
}


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_roles_on_every_endpoint_and_nothing_changes_when_denied(api, users, crm, username):
    job = upload(user=users["dan"], source=crm, kind="crm", content=b"customer_id\nC1\n")
    api.force_authenticate(users[username])
    for (method, url), expected in zip(ENDPOINTS, EXPECTED[username], strict=True):
        response = getattr(api, method)(url.format(id=job.id))
        assert response.status_code == expected, (url, response.content)
        if expected == 403:
            assert response.json()["code"] == "permission_denied"
    assert _upload(api).status_code == 403
    job.refresh_from_db()
    assert (job.status, ImportJob.objects.count()) == ("uploaded", 1)


def test_anonymous_requests_are_refused(api, crm):
    response = api.get("/api/imports/")
    assert response.status_code == 403 and response.json()["code"] == "not_authenticated"


def test_upload_with_mapping_and_start_queues_the_import(api, users, crm):
    api.force_authenticate(users["dan"])
    response = _upload(api, content=b"Kunde,Stadt\nK1,Rom\n",
                       columns='{"Kunde": "customer_id", "Stadt": "city"}', start="true")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["columns"], body["source"]) == ("queued", {"Kunde": "customer_id", "Stadt": "city"},
                                                                  "CRM")
    assert body["progress"]["percent"] == 0 and body["error_report_url"] is None


def test_bad_requests_get_a_code_and_a_message(api, users, crm):
    api.force_authenticate(users["dan"])
    assert _upload(api, source="Nope").json() == {"code": "unknown_source", "message": "No active source 'Nope'."}
    response = _upload(api, content=b"a,b\n1,2\n", start="true")
    assert response.status_code == 400 and response.json()["code"] == "invalid_mapping"
    assert "Map at least one customer identifier column" in response.json()["message"]
    response = _upload(api, columns="{not json")
    assert response.status_code == 400
    assert _upload(api, content=b"").json()["code"] in {"invalid", "empty_file"}
    assert api.get("/api/imports/424242/").json() == {"code": "not_found", "message": "No ImportJob matches the given query."}
    assert ImportJob.objects.filter(status="queued").count() == 0
    assert Profile.objects.count() == 0


def test_list_preview_and_mappings(api, users, crm):
    api.force_authenticate(users["dan"])
    job_id = _upload(api, content=b"email,gender\nA@X.com,M\noops,F\n").json()["id"]
    preview = api.get(f"/api/imports/{job_id}/preview/").json()
    assert preview == {"columns": ["Email", "Gender"], "rows": [
        {"row": 2, "values": ["a@x.com", "male"], "problems": []},
        {"row": 3, "values": ["", "female"], "problems": ["email: malformed email address"]}]}
    listing = api.get("/api/imports/", {"status": "uploaded"}).json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == job_id
    created = api.post("/api/import-mappings/", {"name": "CRM monthly", "kind": "crm",
                                                 "columns": {"Mail": "email"}, "options": {}}, format="json")
    assert created.status_code == 201
    assert ImportMapping.objects.get().columns == {"Mail": "email"}
    assert [m["name"] for m in api.get("/api/import-mappings/", {"kind": "crm"}).json()] == ["CRM monthly"]


@pytest.mark.django_db(transaction=True)
def test_an_import_started_over_the_api_runs_and_reports(api, users, transactional_db):
    source = Source.objects.create(name="CRM", kind=Source.Kind.CRM)
    api.force_authenticate(users["dan"])
    job_id = _upload(api, content=b"customer_id,email\nC1,c1@example.com\nC2,bad\n", start="true").json()["id"]
    services.import_execute(job_id=job_id)  # what the worker runs
    body = api.get(f"/api/imports/{job_id}/").json()
    assert (body["status"], body["rows_loaded"], body["rows_rejected"], body["profiles_created"]) == (
        "succeeded", 1, 1, 1)
    report = api.get(f"/api/imports/{job_id}/errors.csv")
    assert b"".join(report.streaming_content).decode().splitlines() == [
        "row,column,value,reason", "3,email,bad,malformed email address"]
    assert api.post(f"/api/imports/{job_id}/cancel/").json() == {"code": "already_ended",
                                                                 "message": "This import has already ended."}
    assert source.id
