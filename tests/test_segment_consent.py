"""Consent in segments: the consent condition, lookups only for people who granted
personalization, segments that require purposes (lookups, exports, webhooks filter at read time;
membership stays true to the rules), queued webhook deliveries cancelled on withdrawal."""

import csv
import io
import time
from datetime import timedelta

import orjson
import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from cdp import apikeys
from consent import reference
from consent.models import AuditEntry, Purpose
from profiles.models import SourceKey
from segments import lookup
from segments.models import Membership, MembershipChange, Segment, SegmentRun, WebhookDelivery
from segments.services import webhooks
from segments.services.definitions import segment_create, segment_update
from segments.services.realtime import affected_segments, realtime_evaluate
from segments.services.recompute import segment_recompute
from tests.helpers import wait_until
from tests.segment_helpers import World, definition, members
from tests.test_segment_webhooks import Receiver

CONSENT_EMAIL = {"type": "consent", "purpose": "email_marketing"}
GERMANS = definition({"type": "trait", "field": "country", "operator": "=", "value": "DE"})
URL = "/v1/segments"


@pytest.fixture
def people(users):
    """ada (DE): personalization + email; bob (DE): personalization, email withdrawn after granting;
    cy (DE): no decision at all; dee (FR): email only."""
    cache.clear()
    apikeys._cache.clear()
    w = World(now=timezone.now())
    found = {"world": w}
    for name, country in (("ada", "DE"), ("bob", "DE"), ("cy", "DE"), ("dee", "FR")):
        found[name] = w.profile(country=country)
        w.identity(found[name], "anonymous_id", f"anon-{name}")
    w.consent(found["ada"], personalization=True, email_marketing=True)
    w.consent(found["bob"], personalization=True, email_marketing=True)
    w.consent(found["bob"], email_marketing=False)
    w.consent(found["dee"], email_marketing=True)
    _, found["read"] = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    found["auth"] = {"HTTP_AUTHORIZATION": f"Bearer {found['read']}"}
    return found


def make(actor, key, tree, **options) -> Segment:
    segment = segment_create(actor=actor, key=key, name=key.title(), definition=tree, **options)
    segment_recompute(run_id=SegmentRun.objects.filter(segment=segment).latest("id").pk)
    segment.refresh_from_db()
    return segment


def open_members(segment) -> set:
    return set(Membership.objects.filter(segment=segment, version_to__isnull=True).values_list("profile_id", flat=True))


def keys_for(client, people, name) -> list[str]:
    return client.get(URL, {"anonymous_id": f"anon-{name}"}, **people["auth"]).json()["segments"]


# -- the consent condition ------------------------------------------------------------------------
@pytest.mark.django_db
def test_consent_condition_selects_exactly_the_people_who_granted_the_purpose_now(people):
    ada, bob, cy, dee = (people[name] for name in ("ada", "bob", "cy", "dee"))
    assert members(CONSENT_EMAIL) == {ada, dee}
    assert members({"type": "not", "condition": CONSENT_EMAIL}) == {bob, cy}
    assert members({"type": "and", "conditions": [GERMANS["root"], CONSENT_EMAIL]}) == {ada}
    assert members({"type": "or", "conditions": [{"type": "trait", "field": "country", "operator": "=",
                                                  "value": "FR"},
                                                 {"type": "consent", "purpose": "personalization"}]}) == {ada, bob, dee}
    # Restricted to some ids (the real-time form of the same query).
    assert members(CONSENT_EMAIL, profile_ids=[bob, dee]) == {dee}


@pytest.mark.django_db
def test_an_inactive_or_unknown_purpose_matches_nobody(people):
    people["world"].consent(people["ada"], advertising=True)
    assert members({"type": "consent", "purpose": "advertising"}) == {people["ada"]}
    Purpose.objects.filter(key="advertising").update(is_active=False)
    reference.cache_clear()
    assert members({"type": "consent", "purpose": "advertising"}) == set()
    assert members({"type": "consent", "purpose": "no_such_purpose"}) == set()


@pytest.mark.django_db
def test_a_saved_consent_segment_follows_decisions_through_real_time(people, users):
    segment = make(users["alice"], "mailable", definition(CONSENT_EMAIL))
    assert segment.trait_names == ["consent"]
    assert open_members(segment) == {people["ada"], people["dee"]}
    assert [s.key for s in affected_segments(trait_names=["consent"])] == ["mailable"]
    people["world"].consent(people["ada"], email_marketing=False)
    people["world"].consent(people["cy"], email_marketing=True)
    realtime_evaluate(profile_ids=[people["ada"], people["cy"]], trait_names=["consent"])
    assert open_members(segment) == {people["cy"], people["dee"]}
    changes = set(MembershipChange.objects.filter(segment=segment, cause="realtime").values_list("profile_id", "kind"))
    assert changes == {(people["ada"], "exited"), (people["cy"], "entered")}
    assert Segment.objects.get(pk=segment.pk).member_count == 2


def test_a_withdrawal_moves_the_person_out_through_a_real_worker(transactional_db, users, client,
                                                                 celery_worker_process):
    w = World(now=timezone.now())
    ada = w.profile(country="DE")
    w.identity(ada, "anonymous_id", "anon-ada")
    w.consent(ada, email_marketing=True)
    segment = make(users["alice"], "mailable", definition(CONSENT_EMAIL))
    assert open_members(segment) == {ada}
    write_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.WRITE)[1]
    response = client.post("/v1/consent/withdraw", orjson.dumps({"anonymousId": "anon-ada",
                                                                 "purposes": ["email_marketing"]}),
                           content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {write_key}")
    assert response.status_code == 200, response.content
    wait_until(lambda: not open_members(segment), timeout=30, interval=0.1)
    assert MembershipChange.objects.get(segment=segment, kind="exited").cause == "realtime"


# -- injection attempts and bad purposes ---------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("body, status, code, message", [
    ({"definition": definition({"type": "consent", "purpose": "email_marketing' OR '1'='1"})}, 400,
     "invalid_definition", "root.purpose: must be a purpose key such as personalization"),
    ({"definition": definition({"type": "consent", "purpose": "email_marketing); DELETE FROM consent_purpose; --"})},
     400, "invalid_definition", "root.purpose: must be a purpose key such as personalization"),
    ({"definition": definition({"type": "consent", "purpose": "nope"})}, 400, "invalid_definition",
     "root: unknown or inactive consent purpose 'nope'; known purposes: advertising, analytics, email_marketing, "
     "personalization, third_party_sharing"),
    ({"definition": GERMANS, "required_purposes": ["email_marketing'; DROP TABLE segments_segment; --"]}, 400,
     "invalid_purposes", "required_purposes must hold purpose keys such as email_marketing."),
    ({"definition": GERMANS, "required_purposes": ["nope"]}, 400, "unknown_purpose",
     "Unknown or inactive purpose 'nope'; known purposes: advertising, analytics, email_marketing, personalization, "
     "third_party_sharing."),
])
def test_bad_purposes_are_refused_with_a_reason_and_save_nothing(client, users, body, status, code, message):
    client.force_login(users["alice"])
    response = client.post("/api/segments/", {"key": "mailable", "name": "Mailable", **body},
                           content_type="application/json")
    assert response.status_code == status
    assert (response.json()["code"], response.json()["message"]) == (code, message)
    assert not Segment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("purposes", [[{"$ne": ""}], "email_marketing", ["x" * 61], ["a"] * 11])
def test_malformed_required_purposes_are_refused_by_the_api(client, users, purposes):
    client.force_login(users["alice"])
    segment = make(users["alice"], "germans", GERMANS, required_purposes=["email_marketing"])
    response = client.patch("/api/segments/germans/", {"required_purposes": purposes}, content_type="application/json")
    assert response.status_code == 400
    assert (response.json()["code"], list(response.json()["errors"])) == ("invalid", ["required_purposes"])
    segment.refresh_from_db()
    assert segment.required_purposes == ["email_marketing"]


@pytest.mark.django_db
def test_preview_refuses_a_bad_purpose_and_counts_a_good_one(client, users, people):
    client.force_login(users["alice"])
    bad = client.post("/api/segments/preview/", {"definition": definition({"type": "consent", "purpose": "1 OR 1"})},
                      content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_definition"
    good = client.post("/api/segments/preview/", {"definition": definition(CONSENT_EMAIL)},
                       content_type="application/json")
    assert good.status_code == 200
    assert (good.json()["size"], good.json()["sentence"]) == (
        2, "People who match: has granted consent for “Email marketing” (email_marketing).")


@pytest.mark.django_db
def test_the_builder_catalog_offers_the_active_purposes(client, users):
    Purpose.objects.filter(key="third_party_sharing").update(is_active=False)
    reference.cache_clear()
    client.force_login(users["alice"])
    assert client.get("/api/segments/catalog/purposes/").json() == [
        {"value": "advertising", "label": "Advertising"}, {"value": "analytics", "label": "Analytics"},
        {"value": "email_marketing", "label": "Email marketing"},
        {"value": "personalization", "label": "Personalization"}]
    client.force_login(users["mallory"])
    assert client.get("/api/segments/catalog/purposes/").status_code == 403


# -- lookups: personalization, and purposes a segment requires ----------------------------------------
@pytest.fixture
def exposed(people, users):
    source = [people["world"].source.pk]
    return {"germans": make(users["alice"], "germans", GERMANS, exposed_source_ids=source),
            "newsletter": make(users["alice"], "newsletter", GERMANS, exposed_source_ids=source,
                               required_purposes=["email_marketing"])}


@pytest.mark.django_db
def test_lookups_answer_only_for_personalization_and_each_segments_required_purposes(client, people, exposed):
    assert keys_for(client, people, "ada") == ["germans", "newsletter"]
    assert keys_for(client, people, "bob") == ["germans"]  # withdrew email marketing
    assert keys_for(client, people, "cy") == []  # never granted personalization
    body = {"visitors": [{"anonymous_id": f"anon-{name}"} for name in ("ada", "bob", "cy", "dee")]}
    response = client.post(f"{URL}/bulk", orjson.dumps(body), content_type="application/json", **people["auth"])
    assert response.json() == {"results": [{"segments": ["germans", "newsletter"]}, {"segments": ["germans"]},
                                           {"segments": []}, {"segments": []}]}
    # Membership itself stays true to the rules.
    assert open_members(exposed["newsletter"]) == {people["ada"], people["bob"], people["cy"]}


@pytest.mark.django_db
def test_a_withdrawal_excludes_the_person_from_the_very_next_lookup(client, people, exposed):
    assert keys_for(client, people, "ada") == ["germans", "newsletter"]
    people["world"].consent(people["ada"], personalization=False)
    assert keys_for(client, people, "ada") == []
    assert keys_for(client, people, "bob") == ["germans"]
    people["world"].consent(people["bob"], email_marketing=True)
    assert keys_for(client, people, "bob") == ["germans", "newsletter"]
    assert open_members(exposed["germans"]) == {people["ada"], people["bob"], people["cy"]}


@pytest.mark.django_db
def test_with_the_cache_a_committed_withdrawal_invalidates_the_persons_entries_at_once(
        client, people, exposed, settings, django_assert_num_queries, django_capture_on_commit_callbacks):
    settings.CDP_SEGMENT_LOOKUP_CACHE_SECONDS = 300
    assert keys_for(client, people, "ada") == ["germans", "newsletter"]
    with django_assert_num_queries(0):  # answered from the cache
        assert keys_for(client, people, "ada") == ["germans", "newsletter"]
    with django_capture_on_commit_callbacks(execute=True):
        people["world"].consent(people["ada"], email_marketing=False)
    assert keys_for(client, people, "ada") == ["germans"]
    with django_capture_on_commit_callbacks(execute=True):
        people["world"].consent(people["ada"], personalization=False)
    assert keys_for(client, people, "ada") == []
    with django_assert_num_queries(0):
        assert keys_for(client, people, "ada") == []


@pytest.mark.django_db
def test_an_answer_computed_before_an_invalidation_is_never_cached_after_it(settings, people, exposed):
    """The race of a lookup that read the database before a withdrawal committed and fills the
    cache after the withdrawal invalidated it: the fill must not land."""
    settings.CDP_SEGMENT_LOOKUP_CACHE_SECONDS = 300
    source_id = people["world"].source.pk
    pair = ("anonymous_id", lookup.visitor_hash("anonymous_id", "anon-ada"))
    key = lookup._entry_key(source_id, *pair)
    seen = lookup.store.get_many([key])[0]
    assert seen is None  # the lookup saw a miss and queries the database ...
    lookup.lookup_cache_invalidate_profiles(profile_ids=[people["ada"]])  # ... a withdrawal commits ...
    tombstone = lookup.store.get_many([key])[0]
    lookup.store.fill([(key, seen, orjson.dumps([0, ["germans", "newsletter"]]))], 300)  # ... the stale fill
    assert lookup.store.get_many([key])[0] == tombstone
    assert lookup.segment_keys_for(source_id=source_id, pairs=[pair])[pair] == ["germans", "newsletter"]
    # A fill against the tombstone it read lands; one against an older tombstone does not.
    assert orjson.loads(lookup.store.get_many([key])[0]) == [0, ["germans", "newsletter"]]
    lookup.lookup_cache_invalidate_profiles(profile_ids=[people["ada"]])
    first = lookup.store.get_many([key])[0]
    time.sleep(0.001)
    lookup.lookup_cache_invalidate_profiles(profile_ids=[people["ada"]])
    lookup.store.fill([(key, first, orjson.dumps([0, ["stale"]]))], 300)
    assert orjson.loads(lookup.store.get_many([key])[0])[0] == lookup.TOMBSTONE


# -- exports ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_exports_include_only_people_with_the_required_purposes_read_at_export_time(client, users, people, exposed):
    def exported(segment_key: str) -> set[str]:
        client.force_login(users["dan"])
        response = client.get(reverse("segments:export", args=[segment_key]))
        rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert rows[0][0] == "profile_id"
        return {row[0] for row in rows[1:]}

    ada, bob, cy = (str(people[name]) for name in ("ada", "bob", "cy"))
    assert exported("germans") == {ada, bob, cy}
    assert exported("newsletter") == {ada}
    people["world"].consent(people["ada"], email_marketing=False)
    assert exported("newsletter") == set()
    assert open_members(exposed["newsletter"]) == {people["ada"], people["bob"], people["cy"]}
    assert list(AuditEntry.objects.filter(action="segment.exported", object_id="newsletter")
                .values_list("details", flat=True)) == [{"rows": 3, "masked": False,
                                                         "required_purposes": ["email_marketing"]}] * 2


# -- webhooks ---------------------------------------------------------------------------------------
@pytest.fixture
def receiver(settings):
    settings.CDP_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    server = Receiver()
    yield server
    server.close()


def viewers_with_webhook(users, port, **options) -> Segment:
    return make(users["alice"], "viewers", definition({
        "type": "event", "event": "product_viewed", "window": {"last": 1, "unit": "days"},
        "count": {"operator": ">=", "value": 1}}), webhook_url=f"http://127.0.0.1:{port}/hook", **options)


def enter(people, *names) -> None:
    for name in names:
        people["world"].event(people[name], "product_viewed", timedelta(seconds=5))
    realtime_evaluate(profile_ids=[people[name] for name in names], event_names=["product_viewed"])


def sent_profiles(receiver) -> list[list[str]]:
    return [[item["profile_id"] for item in orjson.loads(request["body"])["profiles"]] for request in receiver.requests]


@pytest.mark.django_db
def test_people_without_a_required_purpose_are_never_queued(users, people, receiver):
    viewers_with_webhook(users, receiver.port, required_purposes=["email_marketing"])
    enter(people, "ada", "bob", "cy")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.profile_count, delivery.withheld_count) == (1, 0)
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"
    assert sent_profiles(receiver) == [[str(people["ada"])]]


@pytest.mark.django_db
def test_a_withdrawal_cancels_queued_deliveries_and_nothing_is_sent(client, users, people, receiver,
                                                                    django_capture_on_commit_callbacks):
    segment = viewers_with_webhook(users, receiver.port, required_purposes=["email_marketing"])
    enter(people, "ada")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.profile_count) == ("pending", 1)
    with django_capture_on_commit_callbacks(execute=True):
        people["world"].consent(people["ada"], email_marketing=False)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.profile_count, delivery.withheld_count, delivery.next_attempt_at) == (
        "cancelled", 0, 1, None)
    assert delivery.payload["profiles"] == []
    assert delivery.last_error == webhooks.CANCELLED_REASON
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) is None
    assert receiver.requests == []
    # The delivery log shows it (API and page); a cancelled delivery cannot be retried.
    client.force_login(users["alice"])
    [logged] = client.get(f"/api/segments/{segment.key}/deliveries/").json()
    assert (logged["status"], logged["profile_count"], logged["withheld_count"]) == ("cancelled", 0, 1)
    page = client.get(reverse("segments:detail", args=[segment.key])).content.decode()
    assert "Cancelled (consent withdrawn)" in page and "1 withheld: consent withdrawn" in page
    webhooks.webhook_retry(delivery=delivery)
    delivery.refresh_from_db()
    assert delivery.status == "cancelled"


@pytest.mark.django_db
def test_a_withdrawal_takes_only_that_person_out_of_a_shared_delivery(users, people, receiver):
    viewers_with_webhook(users, receiver.port, required_purposes=["email_marketing"])
    enter(people, "ada", "dee")
    delivery = WebhookDelivery.objects.get()
    assert delivery.profile_count == 2
    people["world"].consent(people["dee"], email_marketing=False)
    people["world"].consent(people["ada"], personalization=False)  # not a purpose this segment requires
    delivery.refresh_from_db()
    assert (delivery.status, delivery.profile_count, delivery.withheld_count) == ("pending", 1, 1)
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"
    assert sent_profiles(receiver) == [[str(people["ada"])]]


@pytest.mark.django_db
def test_consent_is_checked_again_just_before_sending(users, people, receiver):
    """A requirement added after a delivery was queued still applies: the check runs at send time."""
    segment = viewers_with_webhook(users, receiver.port)
    enter(people, "ada", "cy")
    delivery = WebhookDelivery.objects.get()
    assert delivery.profile_count == 2
    segment_update(segment=segment, actor=users["alice"], required_purposes=["email_marketing"])
    assert webhooks.webhook_deliver(delivery_id=delivery.pk) == "delivered"
    assert sent_profiles(receiver) == [[str(people["ada"])]]
    delivery.refresh_from_db()
    assert (delivery.profile_count, delivery.withheld_count) == (1, 1)
    segment_update(segment=segment, actor=users["alice"], required_purposes=["advertising"])
    enter(people, "bob")
    queued = WebhookDelivery.objects.exclude(pk=delivery.pk).count()
    assert queued == 0  # bob never granted advertising: nothing to queue
