"""Profile explorer and identity screens through Django's test client: who may do what, forms,
errors, audit. (The Playwright tests in test_identity_browser.py drive the same screens.)"""

from datetime import timedelta

import pytest
from django.urls import reverse

from consent.models import AuditEntry
from profiles.identifiers import identity_hash
from profiles.models import (
    BlockedIdentifier,
    Identity,
    IdentityFlag,
    IdentityLink,
    Profile,
    ProfileMerge,
    Source,
)
from tests.identity_helpers import T0, event_insert, event_placement, live_profiles, order_insert, resolve_all


@pytest.fixture
def merged(users):
    """Two people wrongly merged by one message: (survivor, absorbed, the wrong link)."""
    web = Source.objects.create(name="Web shop")
    for minute in range(3):
        event_insert(source=web, name="Page", anonymous_id="laptop", timestamp=T0 + timedelta(minutes=minute))
    order_insert(source=web, order_id="W-77", anonymous_id="laptop", amount="42.50",
                 timestamp=T0 + timedelta(minutes=5))
    resolve_all()
    event_insert(source=web, type="identify", user_id="bob", anonymous_id="phone", traits={"email": "bob@mail.de"},
                 timestamp=T0 + timedelta(hours=1))
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    merge = ProfileMerge.objects.get()
    return Profile.objects.get(id=merge.profile_id), Profile.objects.get(id=merge.other_profile_id), merge.link


def _flag(users):
    web = Source.objects.create(name="App")
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna")
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="ben")
    resolve_all()
    return IdentityFlag.objects.get()


PAGES = ["list", "detail", "why", "flags", "blocked", "unmerge"]
ALLOWED = {"list": {"dan", "cora", "root"}, "detail": {"dan", "cora", "root"}, "why": {"dan", "cora", "root"},
           "flags": {"dan", "cora", "root"}, "blocked": {"dan", "cora", "root"}, "unmerge": {"dan", "root"}}


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("username", ["alice", "dan", "cora", "mallory", "root"])
def test_who_may_open_which_screen(client, users, merged, page, username):
    survivor, _, link = merged
    url = {"list": reverse("profiles:list"), "detail": reverse("profiles:detail", args=[survivor.id]),
           "why": reverse("profiles:why"), "flags": reverse("profiles:flags"), "blocked": reverse("profiles:blocked"),
           "unmerge": reverse("profiles:unmerge", args=[survivor.id, link.id])}[page]
    client.force_login(users[username])
    assert client.get(url).status_code == (200 if username in ALLOWED[page] else 403)


def test_screens_need_a_login(client, merged):
    survivor, _, link = merged
    response = client.get(reverse("profiles:unmerge", args=[survivor.id, link.id]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_profile_page_shows_graph_history_and_a_mixed_timeline_and_is_audited(client, users, merged):
    survivor, absorbed, link = merged
    client.force_login(users["cora"])
    response = client.get(reverse("profiles:detail", args=[survivor.id]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "bob@mail.de" in body  # decrypted for staff who may see it
    assert {i.readable for i in response.context["identities"]} == {"laptop", "phone", "bob", "bob@mail.de"}
    assert len(response.context["links"]) == 3
    assert [(e.kind, e.other_profile_id) for e in response.context["history"]] == [("merge", absorbed.id)]
    assert response.context["can_change"] is False and "un-merge…" not in body  # compliance reads only
    timeline = response.context["timeline"]
    assert timeline.paginator.count == 7  # 6 events + 1 purchase
    assert [item.kind for item in timeline.object_list].count("transaction") == 1
    assert "42.50 EUR" in body
    entry = AuditEntry.objects.get(action="profile.viewed")
    assert (entry.actor, entry.object_id, entry.details) == (users["cora"], str(survivor.id),
                                                             {"timeline_page": 1, "show": "all"})

    only_purchases = client.get(reverse("profiles:detail", args=[survivor.id]),
                                {"show": "transactions", "partial": "timeline"}, HTTP_HX_REQUEST="true")
    assert only_purchases.templates[0].name == "profiles/profile_timeline.html"
    assert [item.kind for item in only_purchases.context["timeline"].object_list] == ["transaction"]


def test_the_timeline_is_paginated(client, users):
    web = Source.objects.create(name="Web")
    for minute in range(60):
        event_insert(source=web, name=f"step {minute}", anonymous_id="busy", timestamp=T0 + timedelta(minutes=minute))
    resolve_all()
    [profile] = live_profiles()
    client.force_login(users["dan"])
    page3 = client.get(reverse("profiles:detail", args=[profile.id]), {"page": 3}).context["timeline"]
    assert (page3.number, page3.paginator.num_pages, len(page3.object_list)) == (3, 3, 10)
    assert [item.name for item in page3.object_list][:2] == ["step 9", "step 8"]  # newest first


def test_an_absorbed_profile_redirects_to_its_survivor(client, users, merged):
    survivor, absorbed, _ = merged
    client.force_login(users["dan"])
    response = client.get(reverse("profiles:detail", args=[absorbed.id]))
    assert response.status_code == 302 and response["Location"] == reverse("profiles:detail", args=[survivor.id])


def test_the_unmerge_screen_previews_then_needs_a_reason_and_a_confirmation(client, users, merged):
    survivor, absorbed, link = merged
    url = reverse("profiles:unmerge", args=[survivor.id, link.id])
    before = event_placement()
    client.force_login(users["dan"])
    preview = client.get(url)
    parts = preview.context["parts"]
    assert [(p["part"].status, p["part"].profile_id) for p in parts] == [("keeps", survivor.id),
                                                                       ("revived", absorbed.id)]
    assert parts[1]["part"].events_moving == 2 and "bob@mail.de" in preview.content.decode()

    for data, error in [({"reason": "", "confirm": "on"}, "This field is required."),
                        ({"reason": "   ", "confirm": "on"}, "This field is required."),
                        ({"reason": "bob borrowed the laptop"}, "Tick the box to confirm the un-merge.")]:
        response = client.post(url, data)
        assert response.status_code == 200
        assert error in response.content.decode()
    assert event_placement() == before and IdentityLink.objects.get(id=link.id).is_active

    response = client.post(url, {"reason": "bob borrowed the laptop", "confirm": "on"})
    assert response.status_code == 302 and response["Location"] == reverse("profiles:detail", args=[survivor.id])
    assert len(live_profiles()) == 2
    assert not IdentityLink.objects.get(id=link.id).is_active
    assert AuditEntry.objects.filter(action="profile.unmerged", actor=users["dan"]).count() == 1


@pytest.mark.parametrize("username", ["alice", "cora", "mallory"])
def test_others_cannot_unmerge_and_nothing_changes(client, users, merged, username):
    survivor, _, link = merged
    before = event_placement()
    client.force_login(users[username])
    response = client.post(reverse("profiles:unmerge", args=[survivor.id, link.id]),
                           {"reason": "mine now", "confirm": "on"})
    assert response.status_code == 403
    assert event_placement() == before and IdentityLink.objects.get(id=link.id).is_active
    assert not AuditEntry.objects.filter(action="profile.unmerged").exists()


def test_a_link_of_another_profile_is_not_found(client, users, merged):
    survivor, _, link = merged
    other = Source.objects.create(name="Other")
    event_insert(source=other, name="x", anonymous_id="someone-else")
    resolve_all()
    stranger = next(p for p in live_profiles() if p.id != survivor.id)
    client.force_login(users["dan"])
    assert client.get(reverse("profiles:unmerge", args=[stranger.id, link.id])).status_code == 404
    assert client.get(reverse("profiles:unmerge", args=[survivor.id, 999999])).status_code == 404


def test_why_view_explains_by_identifiers_and_says_when_they_are_not_one(client, users, merged):
    survivor, _, _ = merged
    client.force_login(users["cora"])
    response = client.get(reverse("profiles:why"), {"first": "laptop", "second": " BOB@mail.de "})
    steps = response.context["steps"]
    assert response.context["path"].active
    assert [(link.rule, label) for link, label, _ in steps] == [("same_message", "User id: bob"),
                                                                ("identify_traits", "Email: bob@mail.de")]
    assert AuditEntry.objects.filter(action="profile.why_viewed", object_id=str(survivor.id)).count() == 1

    missing = client.get(reverse("profiles:why"), {"first": "laptop", "second": "nobody@mail.de"})
    assert "No profile has this identifier" in missing.content.decode()
    assert missing.context["path"] is None


def test_why_view_asks_for_the_kind_when_a_value_is_ambiguous(client, users):
    web = Source.objects.create(name="Web")
    event_insert(source=web, name="x", anonymous_id="12345")
    event_insert(source=web, name="x", user_id="12345")
    resolve_all()
    client.force_login(users["dan"])
    response = client.get(reverse("profiles:why"), {"first": "12345", "second": "12345"})
    assert "known as several kinds" in response.content.decode()
    chosen = client.get(reverse("profiles:why"), {"first": "12345", "first_kind": "user_id",
                                                  "second": "12345", "second_kind": "anonymous_id"})
    assert chosen.context["path"] is None
    assert "Not one person." in chosen.content.decode()


def test_why_view_shows_a_refused_link_as_the_reason_they_are_apart(client, users):
    flag = _flag(users)
    client.force_login(users["dan"])
    response = client.get(reverse("profiles:why"), {"a": flag.identity_id, "b": flag.other_identity_id})
    path = response.context["path"]
    assert path is not None and path.active is False
    assert "refused: would put more than 1 user id(s) in one profile" in response.content.decode()
    assert client.get(reverse("profiles:why"), {"a": "x", "b": "1"}).status_code == 404


def test_flags_screen_lists_and_staff_decide(client, users):
    flag = _flag(users)
    client.force_login(users["cora"])
    listing = client.get(reverse("profiles:flags"))
    assert list(listing.context["page"].object_list) == [flag]
    assert client.post(reverse("profiles:flag_link", args=[flag.id]), {"note": "same"}).status_code == 403
    assert IdentityFlag.objects.get(id=flag.id).status == "open" and len(live_profiles()) == 2

    client.force_login(users["dan"])
    response = client.post(reverse("profiles:flag_link", args=[flag.id]), {"note": ""}, follow=True)
    assert "Give a reason for linking these identifiers." in response.content.decode()
    assert len(live_profiles()) == 2
    client.post(reverse("profiles:flag_link", args=[flag.id]), {"note": "ben is anna's work login"})
    assert len(live_profiles()) == 1
    assert IdentityFlag.objects.get(id=flag.id).status == "linked"
    assert list(client.get(reverse("profiles:flags")).context["page"].object_list) == []
    assert list(client.get(reverse("profiles:flags"), {"status": "linked"}).context["page"].object_list) == [flag]


def test_blocked_values_screen_adds_validates_and_toggles(client, users):
    url = reverse("profiles:blocked")
    client.force_login(users["cora"])
    assert client.post(url, {"kind": "", "match": "exact", "value": "guest-user"}).status_code == 403
    assert not BlockedIdentifier.objects.filter(value="guest-user").exists()

    client.force_login(users["dan"])
    response = client.post(url, {"kind": "user_id", "match": "exact", "value": "  Guest-User ", "note": "shop"})
    assert response.status_code == 302
    added = BlockedIdentifier.objects.get(value="guest-user")
    assert (added.kind, added.created_by, added.is_default) == ("user_id", users["dan"], False)
    for data, error in [({"kind": "user_id", "match": "exact", "value": "GUEST-USER"}, "This value is already blocked."),
                        ({"kind": "", "match": "regex", "value": "(unclosed"}, "Not a valid regular expression"),
                        ({"kind": "", "match": "regex", "value": ""}, "A regular expression cannot be empty."),
                        ({"kind": "nonsense", "match": "exact", "value": "x"}, "Select a valid choice.")]:
        response = client.post(url, data)
        assert response.status_code == 200 and error in response.content.decode(), data
    count = BlockedIdentifier.objects.count()

    client.post(reverse("profiles:blocked_toggle", args=[added.id]))
    assert BlockedIdentifier.objects.get(id=added.id).is_active is False
    assert BlockedIdentifier.objects.count() == count
    web = Source.objects.create(name="Web")
    event_insert(source=web, name="x", user_id="guest-user")
    resolve_all()
    assert Identity.objects.filter(kind="user_id", value_hash=identity_hash("user_id", "guest-user")).exists()


def test_unattributed_events_can_be_resolved_again_after_unblocking(client, users):
    from profiles.identity.store import UNATTRIBUTED
    from profiles.models import Event
    from tests.identity_helpers import profile_of_event

    web = Source.objects.create(name="Web")
    event_id = event_insert(source=web, name="Page", anonymous_id="guest")
    resolve_all()
    assert profile_of_event(event_id) == UNATTRIBUTED
    client.force_login(users["dan"])
    assert client.get(reverse("profiles:blocked")).context["unattributed"] == 1
    guest = BlockedIdentifier.objects.get(kind="", match="exact", value="guest")
    client.post(reverse("profiles:blocked_toggle", args=[guest.id]))

    client.force_login(users["cora"])
    assert client.post(reverse("profiles:unattributed_requeue")).status_code == 403
    assert profile_of_event(event_id) == UNATTRIBUTED
    client.force_login(users["dan"])
    client.post(reverse("profiles:unattributed_requeue"))
    assert Event.objects.get(id=event_id).profile_id is None
    resolve_all()
    assert profile_of_event(event_id) not in (None, UNATTRIBUTED)
    assert Identity.objects.filter(kind="anonymous_id", value_hash=identity_hash("anonymous_id", "guest")).exists()
