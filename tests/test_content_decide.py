"""POST /v1/decide: targeted blocks for segment members, stable experiment variants, default
content without personalization consent (effective on the very next request after a withdrawal),
exposures recorded for known people, and every bad input answered with a JSON reason."""

import base64
from collections import Counter

import orjson
import pytest
from django.core.cache import cache
from django.utils import timezone

from cdp import apikeys
from consent.services import requests as dsr
from consent.services.person import person_find
from content.models import ContentBlock, Experiment, Exposure, Slot, Variant
from profiles.models import SourceKey
from segments.models import SegmentRun
from segments.services.definitions import segment_create
from segments.services.recompute import segment_recompute
from tests.segment_helpers import World, definition

pytestmark = pytest.mark.django_db
URL = "/v1/decide"


@pytest.fixture
def site(users):
    """Anna (DE) and Ben (FR) both granted personalization; a 'germans' segment; a hero slot with
    a block for germans (priority 10), a block for everyone (priority 0) and a default; a banner
    slot whose only block runs an A/B experiment."""
    cache.clear()
    apikeys._cache.clear()
    w = World(now=timezone.now())
    anna, ben = w.profile(country="DE"), w.profile(country="FR")
    w.identity(anna, "anonymous_id", "anon-anna")
    w.identity(anna, "email", "anna@example.com")
    w.identity(ben, "anonymous_id", "anon-ben")
    for person in (anna, ben):
        w.consent(person, personalization=True)
    germans = segment_create(actor=users["alice"], key="germans", name="Germans",
                             definition=definition({"type": "trait", "field": "country", "operator": "=",
                                                    "value": "DE"}))
    segment_recompute(run_id=SegmentRun.objects.get(segment=germans).pk)
    hero = Slot.objects.create(key="home_hero", name="Home hero", default_template="<h1>Welcome</h1>")
    for_germans = ContentBlock.objects.create(key="hero_de", name="DE", slot=hero, template="<h1>Willkommen</h1>",
                                              priority=10)
    for_germans.segments.add(germans)
    ContentBlock.objects.create(key="hero_all", name="All", slot=hero, template="<h1>Hello again</h1>")
    banner = Slot.objects.create(key="banner", name="Banner", default_template="")
    block = ContentBlock.objects.create(key="sale", name="Sale", slot=banner, template="<p>Sale</p>")
    Variant.objects.create(block=block, key="red", template="<p class=red>Sale</p>", weight=1)
    Variant.objects.create(block=block, key="blue", template="<p class=blue>Sale</p>", weight=3)
    Experiment.objects.create(key="sale_colour", name="Sale colour", block=block, status="running",
                              started_at=timezone.now())
    _, read_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    _, write_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.WRITE)
    return {"world": w, "anna": anna, "ben": ben, "read": read_key, "write": write_key,
            "auth": {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}}


def _decide(client, site, body, **headers):
    headers = headers or site["auth"]
    return client.post(URL, orjson.dumps(body), content_type="application/json", **headers)


def _by_slot(response) -> dict:
    return {item["slot"]: item for item in response.json()["decisions"]}


def test_members_get_their_block_others_the_block_for_everyone(client, site):
    anna = _decide(client, site, {"anonymous_id": "anon-anna", "slots": ["home_hero"]})
    assert anna.status_code == 200 and anna["Cache-Control"] == "no-store"
    assert anna.json() == {"personalized": True, "decisions": [
        {"slot": "home_hero", "block": "hero_de", "variant": None, "experiment": None,
         "content": "<h1>Willkommen</h1>"}]}
    by_email = _by_slot(_decide(client, site, {"email": " Anna@Example.COM", "slots": ["home_hero"]}))
    assert by_email["home_hero"]["block"] == "hero_de"
    ben = _by_slot(_decide(client, site, {"anonymous_id": "anon-ben", "slots": ["home_hero"]}))
    assert ben["home_hero"]["block"] == "hero_all"
    assert Counter(Exposure.objects.values_list("profile_id", "block__key")) == {
        (site["anna"], "hero_de"): 2, (site["ben"], "hero_all"): 1}


def test_strangers_get_the_default_and_nothing_is_recorded(client, site):
    response = _decide(client, site, {"anonymous_id": "never-seen", "slots": ["home_hero", "banner"]})
    assert response.json() == {"personalized": False, "decisions": [
        {"slot": "home_hero", "block": None, "variant": None, "experiment": None, "content": "<h1>Welcome</h1>"},
        {"slot": "banner", "block": None, "variant": None, "experiment": None, "content": ""}]}
    assert not Exposure.objects.exists()


def test_a_withdrawal_gives_default_content_on_the_very_next_request(client, site):
    body = {"anonymous_id": "anon-anna", "slots": ["home_hero", "banner"]}
    assert _decide(client, site, body).json()["personalized"] is True
    exposures = Exposure.objects.count()
    site["world"].consent(site["anna"], personalization=False)
    response = _decide(client, site, body).json()
    assert response["personalized"] is False
    assert [(d["block"], d["variant"], d["content"]) for d in response["decisions"]] == [
        (None, None, "<h1>Welcome</h1>"), (None, None, "")]
    assert Exposure.objects.count() == exposures  # nothing recorded for her any more
    site["world"].consent(site["anna"], personalization=True)  # she decides again
    assert _by_slot(_decide(client, site, body))["home_hero"]["block"] == "hero_de"


def test_experiment_variants_are_stable_per_visitor_and_follow_the_weights(client, site):
    first = _by_slot(_decide(client, site, {"anonymous_id": "anon-anna", "slots": ["banner"]}))["banner"]
    assert first["experiment"] == "sale_colour" and first["variant"] in ("red", "blue")
    assert first["content"] == Variant.objects.get(key=first["variant"]).template
    for _ in range(3):
        again = _by_slot(_decide(client, site, {"anonymous_id": "anon-anna", "slots": ["banner"]}))["banner"]
        assert again["variant"] == first["variant"]
    exposure = Exposure.objects.filter(profile_id=site["anna"]).latest("id")
    assert (exposure.experiment.key, exposure.variant.key) == ("sale_colour", first["variant"])
    # Many visitors: the 1:3 weights show in the split (consented strangers with profiles).
    w = site["world"]
    seen = Counter()
    for index in range(200):
        person = w.profile(country="IT")
        w.identity(person, "anonymous_id", f"v-{index}")
        w.consent(person, personalization=True)
        seen[_by_slot(_decide(client, site, {"anonymous_id": f"v-{index}", "slots": ["banner"]}))
             ["banner"]["variant"]] += 1
    assert seen.keys() == {"red", "blue"} and 0.15 < seen["red"] / 200 < 0.35


def test_inactive_and_out_of_schedule_blocks_are_skipped(client, site):
    ContentBlock.objects.filter(key="hero_de").update(ends_at=timezone.now())
    ContentBlock.objects.filter(key="hero_all").update(is_active=False)
    decision = _by_slot(_decide(client, site, {"anonymous_id": "anon-anna", "slots": ["home_hero"]}))
    assert (decision["home_hero"]["block"], decision["home_hero"]["content"]) == (None, "<h1>Welcome</h1>")


def test_exposures_are_in_the_access_export_and_go_with_an_erasure(client, site, users, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    _decide(client, site, {"email": "anna@example.com", "slots": ["home_hero", "banner"]})
    _decide(client, site, {"anonymous_id": "anon-ben", "slots": ["home_hero"]})
    archive, counts = dsr.access_export_build(person_find(kind="email", value="anna@example.com"))
    assert counts["content.Exposure"] == 2 and archive
    request = dsr.dsr_create(type="erasure", identifier_kind="email", identifier="anna@example.com",
                             actor=users["cora"])
    outcome = dsr.dsr_erase(request=request, actor=users["cora"])
    assert outcome.counts["content.Exposure"] == {"deleted": 2}
    assert list(Exposure.objects.values_list("profile_id", flat=True)) == [site["ben"]]


BAD = [
    ("GET is not the method", "GET", None, None, 405, "method_not_allowed"),
    ("no key", "POST", {"anonymous_id": "a", "slots": ["home_hero"]}, {}, 401, "missing_key"),
    ("the write key", "POST", {"anonymous_id": "a", "slots": ["home_hero"]}, "write", 401, "invalid_key"),
    ("an unknown key", "POST", {"anonymous_id": "a", "slots": ["home_hero"]}, "rk_nope", 401, "invalid_key"),
    ("not JSON", "POST", b"{slots:", None, 400, "invalid_json"),
    ("a JSON list", "POST", [1], None, 400, "invalid_request"),
    ("no slots", "POST", {"anonymous_id": "a"}, None, 400, "invalid_slots"),
    ("slots not a list", "POST", {"anonymous_id": "a", "slots": "home_hero"}, None, 400, "invalid_slots"),
    ("a slot not a string", "POST", {"anonymous_id": "a", "slots": [{"$ne": 1}]}, None, 400, "invalid_slots"),
    ("too many slots", "POST", {"anonymous_id": "a", "slots": [f"s{i}" for i in range(21)]}, None, 400,
     "invalid_slots"),
    ("no visitor", "POST", {"slots": ["home_hero"]}, None, 400, "invalid_visitor"),
    ("two visitors", "POST", {"anonymous_id": "a", "user_id": "b", "slots": ["home_hero"]}, None, 400,
     "invalid_visitor"),
    ("an email that is none", "POST", {"email": "not-an-email", "slots": ["home_hero"]}, None, 400,
     "invalid_identifier"),
    ("a huge body", "POST", {"anonymous_id": "a", "slots": ["home_hero"], "pad": "x" * 600_000}, None, 413,
     "too_large"),
]


@pytest.mark.parametrize("name, method, body, key, status, code", BAD, ids=[case[0] for case in BAD])
def test_bad_requests_get_a_json_reason_and_record_nothing(client, site, name, method, body, key, status, code):
    headers = site["auth"]
    if key == {}:
        headers = {}
    elif key == "write":
        headers = {"HTTP_AUTHORIZATION": f"Bearer {site['write']}"}
    elif key:
        headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    if method == "GET":
        response = client.get(URL, {"anonymous_id": "anon-anna"}, **headers)
    else:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        response = client.post(URL, data, content_type="application/json", **headers)
    assert response.status_code == status
    assert response.json()["code"] == code and response.json()["message"]
    assert not Exposure.objects.exists()


def test_an_unknown_slot_is_reported_beside_the_known_ones(client, site):
    response = _decide(client, site, {"anonymous_id": "anon-ben", "slots": ["nope", "home_hero", "home_hero"]})
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert decisions[0] == {"slot": "nope", "error": {"code": "unknown_slot", "message": "No slot with the key 'nope'."}}
    assert [d["slot"] for d in decisions] == ["nope", "home_hero"]


def test_the_key_in_the_url_is_refused(client, site):
    response = client.post(f"{URL}?key={site['read']}", b"{}", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "key_in_url"
