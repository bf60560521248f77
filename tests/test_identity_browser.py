"""The profile explorer in a real Chromium: find a person by email, read the timeline, un-merge."""

from datetime import timedelta

import pytest

from profiles.models import IdentityLink, ProfileMerge, Source
from tests.consent_helpers import decide
from tests.helpers import browser_login
from tests.identity_helpers import T0, event_insert, event_placement, live_profiles, order_insert, resolve_all

pytestmark = pytest.mark.browser


def test_data_team_finds_a_profile_by_email_and_reads_its_timeline(page, live_server, users):
    web = Source.objects.create(name="Web shop")
    event_insert(source=web, type="identify", anonymous_id="ann-laptop", timestamp=T0,
                 traits={"email": "ann.lee@mail.de", "firstName": "Ann"})
    for minute in range(1, 31):
        event_insert(source=web, name=f"Viewed item {minute}", anonymous_id="ann-laptop",
                     timestamp=T0 + timedelta(minutes=minute))
    order_insert(source=web, order_id="W-5150", anonymous_id="ann-laptop", amount="89.90",
                 timestamp=T0 + timedelta(hours=1))
    event_insert(source=web, name="Viewed item", anonymous_id="someone-else")
    resolve_all()

    browser_login(page, live_server, "dan")
    page.get_by_role("link", name="Profiles").first.click()
    page.get_by_label("Search profiles").fill("  Ann.Lee@Mail.DE ")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("table tbody tr")
    assert rows.count() == 1
    rows.first.get_by_role("link").click()

    assert page.get_by_test_id("about").inner_text().startswith("Name\nAnn")
    assert "ann.lee@mail.de" in page.get_by_test_id("identities").inner_text()
    timeline = page.get_by_test_id("timeline")
    assert "Order Completed" in timeline.locator("tbody tr").nth(0).inner_text()
    purchase = timeline.locator("tbody tr").nth(1).inner_text()
    assert "order W-5150" in purchase and "89.90 EUR" in purchase  # purchases sit in the same timeline
    assert "Viewed item 30" in timeline.locator("tbody tr").nth(2).inner_text()
    assert page.get_by_test_id("timeline-page").inner_text() == "Page 1 of 2 · 33 in all"

    page.get_by_role("link", name="Older →").click()  # htmx swaps the timeline in place
    page.wait_for_function("document.querySelector('[data-testid=timeline-page]').innerText.startsWith('Page 2')")
    older = page.get_by_test_id("timeline").locator("tbody tr")
    assert older.count() == 8
    assert "Viewed item 7" in older.first.inner_text() and "identify" in older.last.inner_text()
    assert "/profiles/" in page.url and "page=" not in page.url

    page.get_by_role("link", name="Transactions").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=timeline] tbody tr').length === 1")
    assert "W-5150" in page.get_by_test_id("timeline").inner_text()


def test_data_team_unmerges_a_wrong_merge_from_the_profile_screen(page, live_server, users):
    web = Source.objects.create(name="Web shop")
    for minute in range(3):
        event_insert(source=web, name="Page", anonymous_id="laptop", timestamp=T0 + timedelta(minutes=minute))
    resolve_all()
    event_insert(source=web, type="identify", user_id="bob", anonymous_id="phone", traits={"email": "bob@mail.de"},
                 timestamp=T0 + timedelta(hours=1))
    resolve_all()
    before = event_placement()
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    merge = ProfileMerge.objects.get()
    survivor, absorbed = merge.profile_id, merge.other_profile_id

    browser_login(page, live_server, "dan")
    page.goto(f"{live_server.url}/profiles/{survivor}/")
    history = page.get_by_test_id("merge-history")
    assert "absorbed" in history.inner_text()
    page.get_by_test_id(f"unmerge-merge-{merge.id}").click()

    preview = page.get_by_test_id("unmerge-preview")
    assert "Goes back to profile" in preview.inner_text()
    assert "User id: bob" in preview.inner_text() and "Email: bob@mail.de" in preview.inner_text()
    assert page.get_by_test_id("moving-2").inner_text() == "2 events and 0 transactions move."

    page.get_by_label("Reason").fill("   ")
    page.get_by_label("I have checked what will move and want to un-merge").check()
    page.get_by_role("button", name="Un-merge").click()
    assert "This field is required." in page.get_by_test_id("unmerge-form").inner_text()
    assert len(live_profiles()) == 1  # the form error changed nothing

    page.get_by_label("Reason").fill("bob borrowed the laptop once")
    page.get_by_label("I have checked what will move and want to un-merge").check()
    page.get_by_role("button", name="Un-merge").click()
    page.wait_for_url(f"**/profiles/{survivor}/")
    assert "Un-merged: 1 profile(s) split off, 2 events and 0 transactions moved." in \
        page.get_by_role("status").inner_text()
    assert "undone" in page.get_by_test_id("merge-history").inner_text()
    assert "bob borrowed the laptop once" in page.get_by_test_id("links").inner_text()

    after = event_placement()
    assert {event: after[event] for event in before} == before
    assert {p.id for p in live_profiles()} == {survivor, absorbed}
    assert not IdentityLink.objects.get(id=merge.link_id).is_active


def test_data_team_sees_a_consent_conflict_and_rectifies_the_profile(page, live_server, users):
    web = Source.objects.create(name="Web shop")
    decide("anonymous_id", "laptop", {"personalization": True})
    decide("anonymous_id", "phone", {"personalization": False})
    event_insert(source=web, type="identify", anonymous_id="laptop", timestamp=T0, traits={"firstName": "Bob"})
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="phone", user_id="bob", timestamp=T0 + timedelta(hours=1))
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    survivor = live_profiles()[0]

    browser_login(page, live_server, "dan")
    page.goto(f"{live_server.url}/profiles/{survivor.id}/")
    consent = page.get_by_test_id("consent")
    personalization = consent.locator("tr[data-purpose=personalization]").inner_text()
    assert "withdrawn" in personalization and "merge conflict" in personalization
    assert "not decided" in consent.locator("tr[data-purpose=advertising]").inner_text()

    page.get_by_test_id("rectify-link").click()
    page.get_by_label("City").fill("Köln")
    page.get_by_label("Country").fill("1X")  # the input's maxlength already stops longer values
    page.get_by_role("button", name="Save corrections").click()
    assert page.get_by_test_id("error-country").inner_text() == "country must be a two-letter ISO code"
    survivor.refresh_from_db()
    assert (survivor.city, survivor.country) == ("", "")  # the form error changed nothing

    page.get_by_label("Country").fill("de")
    page.get_by_role("button", name="Save corrections").click()
    page.wait_for_url(f"**/profiles/{survivor.id}/")
    assert "Corrected: country, city." in page.get_by_role("status").inner_text()
    assert "Köln, DE" in page.get_by_test_id("about").inner_text()
