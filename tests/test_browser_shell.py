"""The shell of the product in a real Chromium."""

from datetime import UTC, datetime

import pytest

from profiles.demo.generator import DemoOptions, demo_generate
from profiles.models import Profile
from tests.helpers import browser_login

pytestmark = pytest.mark.browser


def test_staff_logs_in_and_sees_the_dashboard_with_counts_and_chart(page, live_server, users):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    demo_generate(options=DemoOptions(profiles=150, days=20, seed=5, end=end))

    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url  # anonymous visitors are sent to the login page
    browser_login(page, live_server, "dan")

    assert page.get_by_role("heading", name="Dashboard").is_visible()
    assert page.get_by_test_id("count-profiles").inner_text() == f"{Profile.objects.count():,}"
    assert page.get_by_test_id("count-segments").inner_text() == "0"
    page.wait_for_selector("#events-chart[data-rendered='true']")
    assert page.get_by_test_id("current-user").inner_text() == "dan"
    nav = page.locator("header nav").inner_text()
    assert "Profiles" in nav and "Imports" in nav and "Consent" not in nav

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/accounts/login/")


def test_wrong_password_shows_a_form_error(page, live_server, users):
    browser_login(page, live_server, "dan", password="wrong")
    assert page.get_by_role("alert").inner_text().startswith("Your username and password didn't match")
