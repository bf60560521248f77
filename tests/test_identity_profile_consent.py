"""The profile page's consent panel (states and merge conflicts, for the roles allowed to read a
profile's consent) and rectification through the profile screen (data team and admins only;
form errors, never a 500; audited with field names only)."""

from datetime import timedelta

import pytest
from django.urls import reverse

from consent.models import AuditEntry, ConsentRecord
from profiles.models import Profile, ProfileTraitSource, Source
from tests.consent_helpers import decide
from tests.identity_helpers import T0, event_insert, live_profiles, resolve_all


@pytest.fixture
def conflicted(users):
    """Bob's laptop granted personalization, his phone withdrew it; logging in on both merged them."""
    web = Source.objects.create(name="Web shop")
    decide("anonymous_id", "laptop", {"personalization": True, "analytics": True})
    decide("anonymous_id", "phone", {"personalization": False, "analytics": True})
    event_insert(source=web, type="identify", anonymous_id="laptop", timestamp=T0,
                 traits={"firstName": "Bob", "city": "Bonn"})
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="phone", user_id="bob", timestamp=T0 + timedelta(hours=1))
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    return live_profiles()[0]


def test_the_profile_page_shows_consent_per_purpose_and_the_merge_conflict(client, users, conflicted):
    client.force_login(users["dan"])
    response = client.get(reverse("profiles:detail", args=[conflicted.id]))
    assert response.status_code == 200
    states = {state["purpose"]: (state["decided"], state["granted"], state["conflict"])
              for state in response.context["consent_states"]}
    assert states == {"analytics": (True, True, False), "personalization": (True, False, True),
                      "email_marketing": (False, False, False), "advertising": (False, False, False),
                      "third_party_sharing": (False, False, False)}
    html = response.content.decode()
    assert 'data-testid="consent-conflict-personalization"' in html
    assert html.count('data-testid="consent-conflict-') == 1
    conflict = ConsentRecord.objects.get(source="system")
    assert f"#{conflict.sequence}" in html
    assert reverse("consent:record", args=[conflict.sequence]) not in html  # the data team cannot open the ledger

    client.force_login(users["cora"])
    html = client.get(reverse("profiles:detail", args=[conflicted.id])).content.decode()
    assert reverse("consent:record", args=[conflict.sequence]) in html
    assert 'data-testid="rectify-link"' not in html


@pytest.mark.parametrize("username", ["alice", "mallory"])
def test_roles_without_profile_access_see_no_consent(client, users, conflicted, username):
    client.force_login(users[username])
    response = client.get(reverse("profiles:detail", args=[conflicted.id]))
    assert response.status_code == 403
    assert b"consent" not in response.content.lower()


def _form(profile: Profile, **changes) -> dict:
    data = {"first_name": profile.first_name or "", "last_name": profile.last_name or "",
            "birth_year": profile.birth_year or "", "gender": profile.gender, "country": profile.country,
            "city": profile.city, "postcode": profile.postcode, "language": profile.language,
            "occupation": profile.occupation, "income_band": profile.income_band}
    data.update(changes)
    return data


def _personal(profile_id) -> tuple:
    profile = Profile.objects.get(id=profile_id)
    return (profile.first_name, profile.last_name, profile.birth_year, profile.gender, profile.country, profile.city,
            profile.postcode, profile.language, profile.occupation, profile.income_band)


@pytest.mark.parametrize("username", ["dan", "root"])
def test_the_data_team_rectifies_from_the_profile_screen(client, users, conflicted, username):
    client.force_login(users[username])
    url = reverse("profiles:rectify", args=[conflicted.id])
    response = client.get(url)
    assert response.status_code == 200
    assert response.context["form"]["first_name"].initial == "Bob"
    assert response.context["form"]["city"].initial == "Bonn"

    response = client.post(url, _form(conflicted, last_name="Builder", city="Köln", country="de", birth_year="1980"))
    assert response.status_code == 302 and response["Location"] == reverse("profiles:detail", args=[conflicted.id])
    assert _personal(conflicted.id) == ("Bob", "Builder", 1980, "", "DE", "Köln", "", "", "", "")
    entry = AuditEntry.objects.get(action="profile.rectified")
    assert (entry.actor, entry.object_id, sorted(entry.details["fields"])) == (
        users[username], str(conflicted.id), ["birth_year", "city", "country", "last_name"])
    assert "Köln" not in str(entry.details) and "Builder" not in str(entry.details)
    # The correction carries its own provenance, so an older value from a merge cannot override it.
    sources = {s.name: (s.source_id, s.is_authoritative) for s in ProfileTraitSource.objects.filter(
        profile_id=conflicted.id)}
    assert sources["city"] == sources["last_name"] == (None, False)
    assert ProfileTraitSource.objects.get(profile_id=conflicted.id, name="city").observed_at > T0 + timedelta(days=1)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"country": "Germany"}, "country", "Ensure this value has at most 2 characters (it has 7)."),
    ({"country": "1X"}, "country", "country must be a two-letter ISO code"),
    ({"birth_year": "1850"}, "birth_year", "Ensure this value is greater than or equal to 1900."),
    ({"birth_year": "nineteen"}, "birth_year", "Enter a whole number."),
    ({"gender": "x" * 21}, "gender", "Ensure this value has at most 20 characters (it has 21)."),
    ({"language": "Deutsch (Schweiz)"}, "language", "Ensure this value has at most 10 characters (it has 17)."),
])
def test_bad_corrections_are_form_errors_and_change_nothing(client, users, conflicted, changes, field, message):
    client.force_login(users["dan"])
    before = _personal(conflicted.id)
    response = client.post(reverse("profiles:rectify", args=[conflicted.id]), _form(conflicted, city="Köln", **changes))
    assert response.status_code == 400
    assert response.context["form"].errors == {field: [message]}
    assert f'data-testid="error-{field}"' in response.content.decode()
    assert _personal(conflicted.id) == before
    assert not AuditEntry.objects.filter(action="profile.rectified").exists()


@pytest.mark.parametrize(("username", "status"), [("alice", 403), ("cora", 403), ("mallory", 403), (None, 302)])
def test_others_cannot_rectify_and_nothing_changes(client, users, conflicted, username, status):
    if username:
        client.force_login(users[username])
    url = reverse("profiles:rectify", args=[conflicted.id])
    before = _personal(conflicted.id)
    assert client.get(url).status_code == status
    assert client.post(url, _form(conflicted, city="Köln", last_name="X")).status_code == status
    assert _personal(conflicted.id) == before
    assert not AuditEntry.objects.filter(action="profile.rectified").exists()
    assert not ProfileTraitSource.objects.filter(profile_id=conflicted.id, name="last_name").exists()


def test_rectifying_an_absorbed_profile_leads_to_its_survivor(client, users, conflicted):
    absorbed = Profile.objects.get(merged_into=conflicted)
    client.force_login(users["dan"])
    before = _personal(absorbed.id)
    response = client.post(reverse("profiles:rectify", args=[absorbed.id]), _form(absorbed, city="Köln"))
    assert response.status_code == 302
    assert response["Location"] == reverse("profiles:rectify", args=[conflicted.id])
    assert _personal(absorbed.id) == before
    assert client.get(reverse("profiles:rectify", args=["00000000-0000-4000-8000-000000000000"])).status_code == 404
