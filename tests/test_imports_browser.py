"""The import wizard in a real Chromium with a real Celery worker: upload with bad rows, map a
column by hand, watch the progress reach 100 %, download the error report."""

import csv
import io

import pytest

from profiles.identifiers import identity_hash
from profiles.models import Identity, ImportJob, Profile, Source
from tests.helpers import browser_login
from tests.imports_helpers import _import_dir  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.browser

CRM_EXPORT = (
    b"Kontakt,Customer ID,First name,Gender,Age,City\n"
    b"ann@example.com,C1,Ann,F,34,Berlin\n"
    b"bob@example,C2,Bob,M,40,Paris\n"
    b"cid@example.com,C3,Cid,male,130,Rome\n"
    b",,Dee,F,20,Oslo\n"
    b"eve@example.com,C5,Eve,female,28,Lyon\n"
)


def test_upload_map_watch_progress_and_download_the_error_report(page, live_server, users, celery_worker_process,
                                                                 tmp_path):
    Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)
    browser_login(page, live_server, "dan")
    page.goto(f"{live_server.url}/profiles/imports/")
    page.get_by_label("What the file holds").select_option("crm")
    page.get_by_label("Source").select_option(label="CRM")
    page.locator("input[type=file]").set_input_files(
        {"name": "crm-export.csv", "mimeType": "text/csv", "buffer": CRM_EXPORT})
    page.get_by_role("button", name="Upload and map columns").click()
    page.wait_for_url("**/mapping/")

    kontakt = page.get_by_label("Import Kontakt as")
    assert kontakt.input_value() == ""  # not recognised from its header
    assert page.get_by_label("Import Customer ID as").input_value() == "customer_id"
    kontakt.select_option("email")  # mapped by hand
    page.get_by_test_id("preview-button").click()
    preview = page.get_by_test_id("preview")
    preview.wait_for()
    assert "bob@example" not in preview.inner_text() and "malformed email address" in preview.inner_text()

    page.get_by_test_id("start-import").click()
    page.wait_for_url("**/imports/*/")
    seen = set()
    for _ in range(600):
        status = page.get_by_test_id("progress").get_attribute("data-status")
        seen.add(page.get_by_test_id("percent").inner_text())
        if status in ("succeeded", "failed", "cancelled"):
            break
        page.wait_for_timeout(100)
    assert status == "succeeded"
    assert page.get_by_test_id("percent").inner_text() == "100 %"
    assert page.get_by_test_id("count-loaded").inner_text() == "2"
    assert page.get_by_test_id("count-rejected").inner_text() == "3"

    with page.expect_download() as download_info:
        page.get_by_test_id("download-errors").click()
    report = list(csv.reader(io.StringIO(download_info.value.path().read_text())))
    assert report == [
        ["row", "column", "value", "reason"],
        ["3", "Kontakt", "bob@example", "malformed email address"],
        ["4", "Age", "130", "impossible age (must be between 0 and 120)"],
        ["5", "", "", "missing identifier: the row names no customer (Customer id (CRM id), Email, Phone, "
                      "User id (website login))"],
    ]
    job = ImportJob.objects.get()
    assert (job.status, job.rows_loaded, job.rows_rejected, job.profiles_created) == ("succeeded", 2, 3, 2)
    ann = Profile.objects.get(id=Identity.objects.get(kind="email", value_hash=identity_hash(
        "email", "ann@example.com")).profile_id)
    eve = Profile.objects.get(id=Identity.objects.get(kind="crm_id", value_hash=identity_hash("crm_id", "C5")).profile_id)
    assert (ann.first_name, ann.gender, ann.age, ann.city) == ("Ann", "female", 34, "Berlin")
    assert (eve.first_name, eve.gender, eve.age, eve.city) == ("Eve", "female", 28, "Lyon")
    assert Profile.objects.count() == 2


def test_upload_of_a_non_table_shows_a_form_error(page, live_server, users):
    Source.objects.create(name="CRM", kind=Source.Kind.CRM)
    browser_login(page, live_server, "dan")
    page.goto(f"{live_server.url}/profiles/imports/")
    page.locator("input[type=file]").set_input_files(
        {"name": "photo.csv", "mimeType": "text/csv", "buffer": b"\x00\x01\x02\x03binary"})
    page.get_by_role("button", name="Upload and map columns").click()
    error = page.locator("#upload-error")
    error.wait_for()
    assert error.inner_text() == "This looks like a binary file, not a CSV or XLSX file."
    assert ImportJob.objects.count() == 0
