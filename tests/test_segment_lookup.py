"""The client-site lookup: read keys, exposure, one or many visitors, merges, the cache, CORS."""

import base64
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from cdp import apikeys
from profiles.models import Profile, Source, SourceKey
from segments.models import Segment, SegmentRun
from segments.services.definitions import segment_archive, segment_create, segment_update
from segments.services.realtime import realtime_evaluate
from segments.services.recompute import segment_recompute
from tests.segment_helpers import World, definition

pytestmark = pytest.mark.django_db
URL = "/v1/segments"
BULK = "/v1/segments/bulk"


@pytest.fixture
def shop(users):
    """Anna (DE, registered, email) in two exposed segments and one hidden one; Ben (FR) in none."""
    cache.clear()
    apikeys._cache.clear()
    w = World(now=timezone.now())
    anna, ben = w.profile(country="DE", city="Berlin"), w.profile(country="FR")
    w.identity(anna, "anonymous_id", "anon-1")
    w.identity(anna, "user_id", "u1")
    w.identity(anna, "email", "Anna@Example.com")
    w.identity(ben, "anonymous_id", "anon-2")
    for person in (anna, ben):  # lookups answer only for people who granted personalization
        w.consent(person, personalization=True)
    other_source = Source.objects.create(name="Partner")
    made = {}
    for key, root, sources in (
            ("germans", {"type": "trait", "field": "country", "operator": "=", "value": "DE"}, [w.source.pk]),
            ("berliners", {"type": "trait", "field": "city", "operator": "=", "value": "Berlin"}, [w.source.pk]),
            ("hidden", {"type": "trait", "field": "country", "operator": "is set"}, [other_source.pk])):
        segment = segment_create(actor=users["alice"], key=key, name=key, definition=definition(root),
                                 exposed_source_ids=sources)
        segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
        made[key] = segment
    _, read_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    _, write_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.WRITE)
    return {"world": w, "anna": anna, "ben": ben, "read": read_key, "write": write_key, "segments": made,
            "auth": {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}}


def test_one_visitor_by_anonymous_id_user_id_or_email(client, shop):
    for params in ({"anonymous_id": "anon-1"}, {"user_id": "u1"}, {"email": "  anna@EXAMPLE.com "}):
        response = client.get(URL, params, **shop["auth"])
        assert response.status_code == 200
        assert response.json() == {"segments": ["berliners", "germans"]}
        assert response["Cache-Control"] == "no-store"
    assert client.get(URL, {"anonymous_id": "anon-2"}, **shop["auth"]).json() == {"segments": []}
    assert client.get(URL, {"anonymous_id": "never-seen"}, **shop["auth"]).json() == {"segments": []}


def test_http_basic_with_the_key_as_user_name_works_too(client, shop):
    token = base64.b64encode(f"{shop['read']}:".encode()).decode()
    response = client.get(URL, {"user_id": "u1"}, HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.json() == {"segments": ["berliners", "germans"]}


@pytest.mark.parametrize("headers, params, status, code", [
    ({}, {"user_id": "u1"}, 401, "missing_key"),
    ({"HTTP_AUTHORIZATION": "Bearer rk_unknown"}, {"user_id": "u1"}, 401, "invalid_key"),
    ({"HTTP_AUTHORIZATION": "Basic !!!"}, {"user_id": "u1"}, 401, "missing_key"),
    ("write", {"user_id": "u1"}, 401, "invalid_key"),
    ("read", {"user_id": "u1", "key": "rk_x"}, 400, "key_in_url"),
    ("read", {"user_id": "u1", "api_key": "rk_x"}, 400, "key_in_url"),
    ("read", {}, 400, "invalid_visitor"),
    ("read", {"user_id": "u1", "email": "anna@example.com"}, 400, "invalid_visitor"),
    ("read", {"email": "not-an-email"}, 400, "invalid_identifier"),
    ("read", {"user_id": "x" * 600}, 400, "invalid_identifier"),
])
def test_bad_requests_get_a_clear_json_error(client, shop, headers, params, status, code):
    if headers in ("read", "write"):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {shop[headers]}"}
    response = client.get(URL, params, **headers)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["message"]
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="segments"'


def test_a_revoked_key_stops_working(client, shop):
    key = SourceKey.objects.get(kind=SourceKey.Kind.READ)
    apikeys.source_key_revoke(key=key)
    assert client.get(URL, {"user_id": "u1"}, **shop["auth"]).status_code == 401


def test_wrong_methods_are_refused_and_preflight_is_answered(client, shop):
    response = client.post(URL, {}, **shop["auth"])
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    assert client.get(BULK, **shop["auth"]).status_code == 405
    preflight = client.options(URL, HTTP_ORIGIN="https://shop.example")
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Headers"] == "Authorization, Content-Type"


def test_cors_only_for_the_sources_allowed_origins(client, shop):
    Source.objects.filter(pk=shop["world"].source.pk).update(allowed_origins=["https://shop.example"])
    allowed = client.get(URL, {"user_id": "u1"}, HTTP_ORIGIN="https://shop.example", **shop["auth"])
    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example"
    other = client.get(URL, {"user_id": "u1"}, HTTP_ORIGIN="https://evil.example", **shop["auth"])
    assert "Access-Control-Allow-Origin" not in other


def test_bulk_answers_each_visitor_in_order(client, shop):
    visitors = [{"user_id": "u1"}, {"anonymous_id": "anon-2"}, {"email": "bad"}, {"user_id": "u1", "email": "a@b.co"},
                "text", {"anonymous_id": "anon-1"}]
    response = client.post(BULK, {"visitors": visitors}, content_type="application/json", **shop["auth"])
    assert response.status_code == 200
    assert response.json() == {"results": [
        {"segments": ["berliners", "germans"]}, {"segments": []},
        {"error": {"code": "invalid_identifier", "message": "The email is not usable."}},
        {"error": {"code": "invalid_visitor", "message": "Give exactly one of anonymous_id, user_id or email."}},
        {"error": {"code": "invalid_visitor", "message": "Each visitor is an object such as {\"user_id\": \"u1\"}."}},
        {"segments": ["berliners", "germans"]},
    ]}


@pytest.mark.parametrize("body, code", [
    ("not json", "invalid_json"), ({"visitors": []}, "invalid_request"), ({"people": [1]}, "invalid_request"),
    ({"visitors": [{"user_id": "u"}] * 1001}, "too_many_visitors"),
])
def test_bulk_refuses_bad_bodies(client, shop, body, code):
    response = client.post(BULK, body, content_type="application/json", **shop["auth"])
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_a_thousand_visitors_in_one_request_and_one_query(client, shop, django_assert_num_queries):
    visitors = [{"anonymous_id": f"nobody-{i}"} for i in range(999)] + [{"user_id": "u1"}]
    client.post(BULK, {"visitors": [{"user_id": "u1"}]}, content_type="application/json", **shop["auth"])  # warm key
    with django_assert_num_queries(1):
        response = client.post(BULK, {"visitors": visitors}, content_type="application/json", **shop["auth"])
    results = response.json()["results"]
    assert len(results) == 1000 and results[-1] == {"segments": ["berliners", "germans"]}
    assert results[0] == {"segments": []}


def test_archived_and_unexposed_segments_are_never_returned(client, shop, users):
    segment_archive(segment=shop["segments"]["berliners"], actor=users["alice"])
    assert client.get(URL, {"user_id": "u1"}, **shop["auth"]).json() == {"segments": ["germans"]}
    segment_update(segment=shop["segments"]["germans"], actor=users["alice"], exposed_source_ids=[])
    assert client.get(URL, {"user_id": "u1"}, **shop["auth"]).json() == {"segments": []}


def test_identifiers_of_an_absorbed_profile_answer_for_the_survivor(client, shop):
    survivor = shop["world"].profile(country="FR")
    shop["world"].consent(survivor, personalization=True)
    Profile.objects.filter(pk=shop["ben"]).update(merged_into=survivor)
    Profile.objects.filter(pk=survivor).update(country="DE")
    realtime_evaluate(profile_ids=[shop["ben"], survivor], trait_names=["country"])
    assert client.get(URL, {"anonymous_id": "anon-2"}, **shop["auth"]).json() == {"segments": ["germans"]}


def test_the_cache_answers_without_queries_and_follows_membership_changes(client, shop, settings,
                                                                          django_assert_num_queries,
                                                                          django_capture_on_commit_callbacks):
    settings.CDP_SEGMENT_LOOKUP_CACHE_SECONDS = 300
    auth = shop["auth"]
    assert client.get(URL, {"anonymous_id": "anon-2"}, **auth).json() == {"segments": []}
    with django_assert_num_queries(0):
        assert client.get(URL, {"anonymous_id": "anon-2"}, **auth).json() == {"segments": []}
    Profile.objects.filter(pk=shop["ben"]).update(country="DE")
    with django_capture_on_commit_callbacks(execute=True):  # Ben's entries go once the change commits
        realtime_evaluate(profile_ids=[shop["ben"]], trait_names=["country"])
    assert client.get(URL, {"anonymous_id": "anon-2"}, **auth).json() == {"segments": ["germans"]}
    # A configuration change retires every cached answer of the source at once.
    with django_capture_on_commit_callbacks(execute=True):
        segment_update(segment=shop["segments"]["germans"], actor=None, exposed_source_ids=[])
    assert client.get(URL, {"anonymous_id": "anon-2"}, **auth).json() == {"segments": []}
    # A big recompute bumps the generation too.
    from segments import lookup

    lookup.lookup_cache_invalidate_recent(segment_id=shop["segments"]["berliners"].pk, changed=10**6)
    with django_assert_num_queries(1):
        client.get(URL, {"user_id": "u1"}, **auth)


def test_segment_keys_change_within_the_same_second_as_the_membership(client, shop, users):
    w = shop["world"]
    viewers = segment_create(actor=users["alice"], key="viewers", name="Viewers", exposed_source_ids=[w.source.pk],
                             definition=definition({"type": "event", "event": "product_viewed",
                                                    "window": {"last": 1, "unit": "days"},
                                                    "count": {"operator": ">=", "value": 1}}))
    segment_recompute(run_id=SegmentRun.objects.get(segment=viewers).pk)
    w.event(shop["ben"], "product_viewed", timedelta(seconds=1))
    realtime_evaluate(profile_ids=[shop["ben"]], event_names=["product_viewed"])
    assert client.get(URL, {"anonymous_id": "anon-2"}, **shop["auth"]).json() == {"segments": ["viewers"]}
    assert Segment.objects.get(key="viewers").member_count == 1
