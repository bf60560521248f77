from datetime import UTC, datetime

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.urls import reverse

from profiles.demo.generator import DemoOptions, demo_generate
from profiles.models import Event, Profile
from tests.helpers import PASSWORD

OUR_APPS = ("profiles", "segments", "consent", "content")


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


def test_roles_exist_as_groups(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {"marketer", "data_team", "compliance_officer"}


def test_dashboard_requires_login(client, db):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# Who may open which section: one table, every role.
SCREENS = {
    "dashboard": {"alice": 200, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "profiles:list": {"alice": 403, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "profiles:imports": {"alice": 403, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "segments:list": {"alice": 200, "dan": 200, "cora": 200, "mallory": 403, "root": 200},
    "content:blocks": {"alice": 200, "dan": 403, "cora": 200, "mallory": 403, "root": 200},
    "content:experiments": {"alice": 200, "dan": 403, "cora": 200, "mallory": 403, "root": 200},
    "consent:home": {"alice": 403, "dan": 403, "cora": 200, "mallory": 403, "root": 200},
}


@pytest.mark.parametrize("url_name, username, expected",
                         [(url, user, code) for url, row in SCREENS.items() for user, code in row.items()])
def test_section_access_matrix(client, users, url_name, username, expected):
    client.force_login(users[username])
    assert client.get(reverse(url_name)).status_code == expected


def test_navigation_shows_only_permitted_sections(client, users):
    client.force_login(users["alice"])
    labels = [item["label"] for item in client.get(reverse("dashboard")).context["nav_sections"]]
    assert labels == ["Segments", "Content", "Experiments"]


def test_dashboard_shows_headline_counts_and_daily_series(client, users):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    demo_generate(options=DemoOptions(profiles=120, days=10, seed=3, end=end))
    client.force_login(users["dan"])
    response = client.get(reverse("dashboard"))
    figures = response.context["figures"]
    assert figures["profiles"] == Profile.objects.count() == 120
    today = end.replace(hour=0)
    assert figures["events_today"] == Event.objects.filter(timestamp__gte=today).count()
    series = response.context["chart"]
    assert len(series["labels"]) == 30
    assert sum(series["counts"]) == Event.objects.count()  # all demo events fall inside 30 days
    assert f'data-testid="count-profiles">{figures["profiles"]:,}<' in response.content.decode()


def test_every_model_is_registered_in_admin(db):
    missing = [model.__name__ for name in OUR_APPS for model in apps.get_app_config(name).get_models()
               if model not in admin.site._registry]
    assert missing == []


def test_admin_changelists_open_for_every_model(client, users):
    end = datetime(2026, 11, 1, tzinfo=UTC)
    demo_generate(options=DemoOptions(profiles=20, days=5, seed=1, end=end))
    client.force_login(users["root"])
    for name in OUR_APPS:
        for model in apps.get_app_config(name).get_models():
            url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
            assert client.get(url).status_code == 200, url


def test_profile_search_by_email_and_detail_page(client, users):
    from profiles.identifiers import readable_value
    from profiles.models import Identity

    demo_generate(options=DemoOptions(profiles=50, days=10, seed=2, end=datetime(2026, 11, 1, tzinfo=UTC)))
    email_identity = Identity.objects.filter(kind="email").select_related("profile").first()
    email = readable_value(email_identity)
    client.force_login(users["dan"])
    listing = client.get(reverse("profiles:list"), {"q": f"  {email.upper()} "})
    assert list(listing.context["page"].object_list) == [email_identity.profile]
    detail = client.get(reverse("profiles:detail", args=[email_identity.profile_id]))
    assert detail.status_code == 200
    assert email in detail.content.decode()
    # The timeline holds the profile's events and its purchases.
    assert detail.context["timeline"].paginator.count == Event.objects.filter(
        profile_id=email_identity.profile_id).count() + email_identity.profile.transactions.count()


def test_login_page_rejects_wrong_password(client, users):
    response = client.post(reverse("login"), {"username": "dan", "password": "nope"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()
    response = client.post(reverse("login"), {"username": "dan", "password": PASSWORD})
    assert response.status_code == 302


def test_healthz_reports_database_and_broker(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_is_503_when_the_broker_is_unreachable(client, db, settings):
    from cdp.celery import app

    previous = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # healthz opens a fresh connection each time
    try:
        response = client.get("/healthz")
    finally:
        app.conf.broker_url = previous
    assert response.status_code == 503
    assert response.json()["broker"] == "unreachable"
    assert response.json()["database"] == "ok"
