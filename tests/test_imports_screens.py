"""Import screens through Django's test client: roles, upload errors, mapping problems, preview,
error report download (formula-injection safe), history search."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from consent.models import AuditEntry
from profiles.models import ImportJob, ImportMapping, Source
from tests.imports_helpers import _import_dir, run_import, upload  # noqa: F401 - autouse fixture


@pytest.fixture
def crm(db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


def _post_file(client, content: bytes, name="crm.csv", kind="crm", source=None, json=True):
    headers = {"HTTP_ACCEPT": "application/json"} if json else {}
    return client.post(reverse("profiles:import_upload"),
                       {"kind": kind, "source": source.id if source else "", "file": SimpleUploadedFile(name, content)},
                       **headers)


@pytest.mark.parametrize("username, expected", [("alice", 403), ("dan", 201), ("cora", 403), ("mallory", 403),
                                                ("root", 201)])
def test_only_the_data_team_and_admins_may_upload(client, users, crm, username, expected):
    client.force_login(users[username])
    response = _post_file(client, b"customer_id\nC1\n", source=crm)
    assert response.status_code == expected
    assert ImportJob.objects.count() == (1 if expected == 201 else 0)


def test_upload_of_a_file_that_is_not_a_table_is_a_clear_form_error(client, users, crm):
    client.force_login(users["dan"])
    response = _post_file(client, b"\x00\x01\x02binary\x00", source=crm)
    assert response.status_code == 400
    assert response.json() == {"code": "invalid_upload", "message": "The upload was not accepted.",
                               "errors": {"file": ["This looks like a binary file, not a CSV or XLSX file."]}}
    response = _post_file(client, b"", source=crm)
    assert response.status_code == 400 and "file" in response.json()["errors"]
    response = _post_file(client, b"a,b\n1,2\n", source=None)
    assert response.json()["errors"] == {"source": ["This field is required."]}
    assert ImportJob.objects.count() == 0


def test_mapping_step_auto_matches_and_refuses_a_mapping_without_identifier(client, users, crm):
    client.force_login(users["dan"])
    response = _post_file(client, b"E-Mail,Vorname,Lieblingsfarbe\na@example.com,Ann,blue\n", source=crm)
    job = ImportJob.objects.get(pk=response.json()["id"])
    assert job.columns == {"E-Mail": "email", "Vorname": "first_name", "Lieblingsfarbe": ""}
    page = client.get(reverse("profiles:import_mapping", args=[job.id]))
    assert page.status_code == 200 and "a@example.com" in page.content.decode()
    posted = client.post(reverse("profiles:import_mapping", args=[job.id]),
                         {"target_0": "", "target_1": "first_name", "target_2": "custom", "trait_2": "favourite_colour",
                          "date_format": "iso", "action": "start"})
    assert posted.status_code == 400
    assert "Map at least one customer identifier column" in posted.content.decode()
    job.refresh_from_db()
    assert job.status == "uploaded"


def test_preview_shows_cleaned_rows_and_their_problems(client, users, crm):
    client.force_login(users["dan"])
    job = upload(user=users["dan"], source=crm, kind="crm", content=b"email,gender,age\n A@X.COM ,M,34\nbad,F,300\n")
    response = client.post(reverse("profiles:import_preview", args=[job.id]),
                           {"target_0": "email", "target_1": "gender", "target_2": "age", "date_format": "iso",
                            "labels_gender": "M = male\nF = female"})
    rows = response.context["rows"]
    assert [(r.row_number, r.values, r.errors) for r in rows] == [
        (2, ["a@x.com", "male", "34"], []),
        (3, ["", "female", "300"], ["email: malformed email address",
                                    "age: impossible age (must be between 0 and 120)"]),
    ]


def test_saved_mapping_is_reused_for_the_next_file(client, users, crm):
    client.force_login(users["dan"])
    job = upload(user=users["dan"], source=crm, kind="crm", content=b"Kontakt,Ort\na@example.com,Bonn\n")
    client.post(reverse("profiles:import_mapping", args=[job.id]),
                {"target_0": "email", "target_1": "city", "date_format": "iso", "save_mapping": "on",
                 "save_as": "Monthly CRM", "action": "save"})
    mapping = ImportMapping.objects.get(name="Monthly CRM")
    assert mapping.columns == {"Kontakt": "email", "Ort": "city"}
    response = client.post(reverse("profiles:import_upload"),
                           {"kind": "crm", "source": crm.id, "mapping": mapping.id,
                            "file": SimpleUploadedFile("next.csv", b"Kontakt,Ort\nb@example.com,Graz\n")},
                           HTTP_ACCEPT="application/json")
    assert ImportJob.objects.get(pk=response.json()["id"]).columns == {"Kontakt": "email", "Ort": "city"}


@pytest.mark.django_db(transaction=True)
def test_error_report_download_is_formula_safe_audited_and_readable_by_compliance(client, users, transactional_db):
    source = Source.objects.create(name="CRM", kind=Source.Kind.CRM)
    job = run_import(user=users["dan"], source=source, kind="crm",
                     content=b"customer_id,email\nC1,=HYPERLINK(\"http://x\")\nC2,@evil\n")
    client.force_login(users["cora"])
    response = client.get(reverse("profiles:import_errors", args=[job.id]))
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows == [["row", "column", "value", "reason"],
                    ["2", "email", "'=HYPERLINK(\"http://x\")", "malformed email address"],
                    ["3", "email", "'@evil", "malformed email address"]]
    assert AuditEntry.objects.filter(action="import.error_report_downloaded", actor=users["cora"],
                                     object_id=str(job.id)).exists()
    client.force_login(users["alice"])
    assert client.get(reverse("profiles:import_errors", args=[job.id])).status_code == 403


def test_history_lists_search_and_hides_actions_from_compliance(client, users, crm):
    upload(user=users["dan"], source=crm, kind="crm", content=b"customer_id\nC1\n", name="january.csv")
    upload(user=users["dan"], source=crm, kind="crm", content=b"customer_id\nC2\n", name="february.csv")
    client.force_login(users["cora"])
    page = client.get(reverse("profiles:imports"), {"q": "janu"})
    assert [job.file_name for job in page.context["page"].object_list] == ["january.csv"]
    assert page.context["form"] is None and "upload-form" not in page.content.decode()
    job = ImportJob.objects.get(file_name="february.csv")
    assert client.get(reverse("profiles:import_detail", args=[job.id])).status_code == 200
    assert client.post(reverse("profiles:import_cancel", args=[job.id])).status_code == 403
    assert client.get(reverse("profiles:import_mapping", args=[job.id])).status_code == 403
    job.refresh_from_db()
    assert job.status == "uploaded"
    client.force_login(users["dan"])
    assert client.get(reverse("profiles:import_detail", args=[99999])).status_code == 404


def test_a_running_import_that_stopped_reporting_is_marked_failed_by_beat(users, crm):
    from datetime import timedelta

    from django.utils import timezone

    from profiles.imports.tasks import imports_stale_fail_task

    stale = upload(user=users["dan"], source=crm, kind="crm", content=b"customer_id\nC1\n")
    fresh = upload(user=users["dan"], source=crm, kind="crm", content=b"customer_id\nC2\n")
    ImportJob.objects.filter(pk=stale.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    ImportJob.objects.filter(pk=fresh.pk).update(status="running", heartbeat_at=timezone.now())
    assert imports_stale_fail_task() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert (stale.status, fresh.status) == ("failed", "running")
    assert "nothing from this file was loaded" in stale.error_message
