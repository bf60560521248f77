"""The builder and the segment screens in a real Chromium, with a real worker computing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from segments.models import Segment
from tests.helpers import browser_login, wait_until
from tests.segment_helpers import World

pytestmark = pytest.mark.browser


def shop_world():
    """12 people: 5 Germans who viewed products, 3 Germans who did not, 4 French viewers."""
    w = World(now=timezone.now())
    for index in range(12):
        country = "DE" if index < 8 else "FR"
        person = w.profile(country=country, city="Berlin" if country == "DE" else "Paris", last_device_type="mobile")
        if index < 5 or index >= 8:
            w.events(person, "product_viewed", [timedelta(days=1 + index % 3)], properties={"category": "shoes"})
    return w


def test_build_a_segment_with_two_conditions_see_its_size_save_and_find_it_listed(
        page, live_server, users, celery_worker_process):
    shop_world()
    browser_login(page, live_server, "alice")
    page.goto(f"{live_server.url}/segments/new/")
    page.wait_for_selector("body[data-builder-ready='true']")
    page.get_by_label("Key").fill("german_viewers")
    page.get_by_label("Name", exact=True).fill("German viewers")
    page.get_by_label("Condition type", exact=True).select_option("event")
    page.get_by_role("button", name="Add condition").click()
    page.get_by_label("Event name").fill("product_viewed")
    wait_until(lambda: page.get_by_test_id("preview-size").inner_text() == "9", timeout=15)
    page.get_by_label("Condition type", exact=True).select_option("trait")
    page.get_by_role("button", name="Add condition").click()
    page.get_by_label("Value", exact=True).fill("DE")
    wait_until(lambda: page.get_by_test_id("preview-size").inner_text() == "5", timeout=15)
    assert page.locator("#preview-meta").inner_text().startswith("41.7% of 12 profiles")
    assert page.get_by_test_id("preview-sentence").inner_text() == (
        "People who match: did product_viewed at least once in the last 30 days and country is “DE”.")
    assert page.locator("#preview-sample tbody tr").count() == 5
    page.get_by_test_id("save-segment").click()
    page.wait_for_url(f"{live_server.url}/segments/german_viewers/")
    segment = Segment.objects.get(key="german_viewers")
    assert (segment.owner, segment.definition["root"]["type"]) == (users["alice"], "and")
    wait_until(lambda: Segment.objects.get(pk=segment.pk).status == "ok", timeout=30)
    page.goto(f"{live_server.url}/segments/")
    assert page.get_by_test_id("size-german_viewers").inner_text() == "5"
    row = page.locator("tr[data-key='german_viewers']").inner_text()
    assert "German viewers" in row and "alice" in row and "real-time" in row


def test_editing_a_live_segment_shows_a_dry_run_diff_before_saving(page, live_server, users, celery_worker_process):
    from segments.models import SegmentRun
    from segments.services.definitions import segment_create
    from segments.services.recompute import segment_recompute
    from tests.segment_helpers import definition

    shop_world()
    segment = segment_create(actor=users["alice"], key="germans", name="Germans", definition=definition(
        {"type": "trait", "field": "country", "operator": "=", "value": "DE"}))
    segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
    browser_login(page, live_server, "alice")
    page.goto(f"{live_server.url}/segments/germans/edit/")
    page.wait_for_selector("body[data-builder-ready='true']")
    wait_until(lambda: page.get_by_test_id("preview-size").inner_text() == "8", timeout=15)
    page.get_by_label("Value", exact=True).fill("FR")
    wait_until(lambda: page.get_by_test_id("preview-size").inner_text() == "4", timeout=15)
    page.get_by_test_id("save-segment").click()
    page.wait_for_selector("[data-testid=diff-entering]")
    assert page.get_by_test_id("diff-entering").inner_text().startswith("4 would enter")
    assert page.get_by_test_id("diff-leaving").inner_text().startswith("8 would leave")
    segment.refresh_from_db()
    assert segment.definition_version == 1  # nothing saved by the dry run
    page.get_by_test_id("confirm-save").click()
    page.wait_for_url(f"{live_server.url}/segments/germans/")
    wait_until(lambda: Segment.objects.get(pk=segment.pk).member_count == 4, timeout=30)
    segment.refresh_from_db()
    assert segment.definition_version == 2
    page.reload()
    assert page.get_by_test_id("segment-size").inner_text().startswith("4")
    page.wait_for_selector("#size-chart[data-rendered='true']")


def test_a_bad_key_shows_a_form_error_and_saves_nothing(page, live_server, users):
    browser_login(page, live_server, "alice")
    page.goto(f"{live_server.url}/segments/new/?template=champions")
    page.wait_for_selector("body[data-builder-ready='true']")
    page.get_by_label("Key").fill("Bad Key!")
    page.get_by_test_id("save-segment").click()
    page.wait_for_selector("#error-key:not(:empty)")
    assert page.locator("#error-key").inner_text().startswith("The key must be 2-80 characters")
    assert Segment.objects.count() == 0


def test_a_consent_condition_and_a_required_purpose_from_the_builder(page, live_server, users):
    """The builder offers the purposes: a consent condition counts the people who granted it, and
    a required purpose is saved with the segment and shown on its page."""
    from consent.services import inputs
    from profiles.models import Profile

    shop_world()
    people = list(Profile.objects.filter(country="DE").order_by("id").values_list("id", flat=True))[:3]
    for person in people:
        inputs.consent_record(inputs.ConsentRequest(subject=inputs.subject_for_profile(person),
                                                    purposes={"email_marketing": True}))
    browser_login(page, live_server, "alice")
    page.goto(f"{live_server.url}/segments/new/")
    page.wait_for_selector("body[data-builder-ready='true']")
    page.get_by_label("Key").fill("mailable")
    page.get_by_label("Name", exact=True).fill("Mailable")
    page.get_by_label("Condition type", exact=True).select_option("consent")
    page.get_by_role("button", name="Add condition").click()
    page.wait_for_selector("select[aria-label='Consent purpose'] option[value='advertising']", state="attached")
    page.get_by_label("Consent purpose").select_option("email_marketing")
    wait_until(lambda: page.get_by_test_id("preview-size").inner_text() == "3", timeout=15)
    assert page.get_by_test_id("preview-sentence").inner_text() == (
        "People who match: has granted consent for “Email marketing” (email_marketing).")
    page.get_by_test_id("required-purposes").get_by_label("Advertising").check()
    page.get_by_test_id("save-segment").click()
    page.wait_for_url(f"{live_server.url}/segments/mailable/")
    segment = Segment.objects.get(key="mailable")
    assert segment.definition == {"version": 1, "root": {"type": "consent", "purpose": "email_marketing"}}
    assert (segment.required_purposes, segment.trait_names) == (["advertising"], ["consent"])
    assert page.get_by_test_id("required-purposes").inner_text().startswith("Advertising — exports, webhooks")
