"""Sources in a real Chromium: create a source, see its key once, use it, revoke it."""

import base64

import orjson
import pytest
import requests

from profiles.models import Event, RejectedEvent, Source, SourceKey
from tests.helpers import browser_login
from tests.ingestion_helpers import CONSENT

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("fresh_ingestion_caches")]




def _post_track(live_server, key: str, message_id: str) -> requests.Response:
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    body = {"userId": "u-1", "event": "Clicked", "messageId": message_id, "context": CONSENT}
    return requests.post(f"{live_server.url}/v1/track", data=orjson.dumps(body), timeout=10,
                         headers={"Authorization": auth, "Connection": "close"})


def test_create_a_source_see_the_key_once_then_revoke_it(page, live_server, users):
    browser_login(page, live_server, "dan")
    page.goto(f"{live_server.url}/profiles/imports/")
    page.get_by_role("button", name="Manage sources and keys").click()
    assert page.get_by_text("No sources yet.").is_visible()
    page.get_by_role("button", name="New source").click()

    page.get_by_label("Name").fill("Web shop")
    page.get_by_label("Allowed origins").fill("shop.example")  # not an origin: a form error, nothing created
    page.get_by_role("button", name="Create source and write key").click()
    assert "is not an origin" in page.get_by_role("alert").inner_text()
    assert Source.objects.count() == 0
    page.get_by_label("Allowed origins").fill("https://shop.example")
    page.get_by_role("button", name="Create source and write key").click()

    raw = page.get_by_test_id("raw-key").inner_text()
    assert raw.startswith("wk_")
    assert "never be shown again" in page.content()
    source = Source.objects.get(name="Web shop")
    assert source.allowed_origins == ["https://shop.example"]
    assert _post_track(live_server, raw, "before-revoke").status_code == 200

    page.get_by_role("button", name="I have copied it").click()
    assert raw not in page.content()  # the detail page shows the prefix only
    row = page.get_by_test_id(f"key-{raw[:10]}")
    assert row.get_by_role("cell", name="active").is_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_load_state("networkidle")
    assert "revoked" in page.get_by_role("status").inner_text()
    assert page.get_by_test_id(f"key-{raw[:10]}").get_by_role("cell", name="revoked").is_visible()
    assert SourceKey.objects.get(source=source).revoked_at is not None

    refused = _post_track(live_server, raw, "after-revoke")
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_write_key")
    assert list(Event.objects.values_list("message_id", flat=True)) == ["before-revoke"]
    assert RejectedEvent.objects.get().key_prefix == raw[:10]

    page.goto(f"{live_server.url}/profiles/sources/")
    cells = page.get_by_test_id("sources").locator("tbody tr td")
    assert cells.nth(0).inner_text() == "Web shop"
    assert cells.nth(3).inner_text() == "0"  # no active key left
    assert cells.nth(4).inner_text() == "1"  # one event stored in the last 24 hours


def test_a_marketer_cannot_open_sources(page, live_server, users):
    browser_login(page, live_server, "alice")
    response = page.goto(f"{live_server.url}/profiles/sources/")
    assert response.status == 403
