"""A compliance officer in a real Chromium: walks the ledger (filter by person and purpose, opens a
record with its notice text, exports CSV) and handles an access request to a downloadable file
produced by a real Celery worker."""

import csv
import zipfile

import orjson
import pytest

from consent.models import NoticeVersion
from tests.consent_helpers import decide, make_person
from tests.helpers import browser_login

pytestmark = pytest.mark.browser

NOTICE_TEXT = "We and our partners use cookies to measure how our shop is used. You can change your mind at any time."


@pytest.fixture
def shared_media(tmp_path, settings, monkeypatch):
    folder = tmp_path / "media"
    settings.MEDIA_ROOT = folder
    monkeypatch.setenv("CDP_MEDIA_DIR", str(folder))  # the worker process writes here too
    return folder


def test_compliance_officer_walks_the_ledger_and_answers_an_access_request(
        shared_media, celery_worker_process, page, live_server, users):
    notice = NoticeVersion.objects.create(key="web-banner", version="4", language="en", title="Cookie banner",
                                          controllers=["Demo Shop GmbH"], text=NOTICE_TEXT)
    make_person(email="grace.hopper@example.com", anonymous_id="anon-grace", first_name="Grace", last_name="Hopper")
    make_person(email="alan@example.com")
    decide("email", "grace.hopper@example.com", {"analytics": True, "email_marketing": False}, notice=notice.pk)
    decide("anonymous_id", "anon-grace", {"personalization": True}, notice=notice.pk)
    decide("email", "alan@example.com", {"analytics": True}, notice=notice.pk)

    browser_login(page, live_server, "cora")
    page.get_by_role("link", name="Consent").click()
    page.get_by_role("link", name="Ledger").click()
    page.get_by_label("Person", exact=True).fill("Grace.Hopper@example.com")
    page.get_by_label("Purpose", exact=True).select_option("analytics")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_load_state("networkidle")
    rows = page.get_by_test_id("ledger").locator("tbody tr")
    assert rows.count() == 1
    assert "Analytics" in rows.first.inner_text() and "granted" in rows.first.inner_text()
    assert page.get_by_test_id("ledger-count").inner_text() == "1 record"

    rows.first.get_by_role("link").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_test_id("notice-text").inner_text().strip() == NOTICE_TEXT
    assert "web-banner version 4 (en)" in page.get_by_test_id("notice").inner_text()
    page.get_by_role("link", name="← Ledger").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_test_id("ledger").locator("tbody tr").count() == 1  # the filters came back with us

    with page.expect_download() as download_info:
        page.get_by_test_id("export-csv").click()
    exported = download_info.value
    assert exported.suggested_filename.startswith("consent-ledger-") and exported.suggested_filename.endswith(".csv")
    with open(exported.path(), encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["purpose"], row["granted"], row["identifier_kind"]) for row in rows] == [
        ("analytics", "granted", "email")]
    assert rows[0]["notice"] == "web-banner v4 (en)"

    page.get_by_role("link", name="Requests").click()
    page.get_by_text("Register a request").click()
    page.get_by_label("Request", exact=True).select_option("access")
    page.get_by_label("Identified by", exact=True).select_option("email")
    page.get_by_label("Identifier", exact=True).fill("grace.hopper@example.com")
    page.get_by_role("button", name="Register", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert "registered, due" in page.get_by_role("status").first.inner_text()
    page.get_by_test_id("start-export").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_test_id("status").inner_text() == "In progress"
    download_link = page.get_by_test_id("download")
    download_link.wait_for(timeout=60000)  # htmx polls the status until the worker is done
    assert page.get_by_test_id("status").inner_text() == "Completed"
    with page.expect_download() as download_info:
        download_link.click()
    archive = zipfile.ZipFile(download_info.value.path())
    assert download_info.value.suggested_filename.endswith("-access.zip")
    identities = orjson.loads(archive.read("profiles.Identity.json"))
    assert sorted(i["value"] for i in identities) == ["anon-grace", "grace.hopper@example.com"]
    history = orjson.loads(archive.read("consent_history.json"))
    assert sorted((h["purpose"], h["granted"]) for h in history) == [
        ("analytics", True), ("email_marketing", False), ("personalization", True)]
    assert "alan@example.com" not in archive.read("profiles.Identity.csv").decode()
