"""Real-time membership: changed profiles only, affected segments only, merges, time passing, a real worker."""

import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import transaction
from django.utils import timezone

from cdp import hooks
from profiles.models import Profile, SourceKey
from segments.models import Membership, MembershipChange, Segment, SegmentRun, Timer
from segments.services.definitions import segment_create
from segments.services.realtime import realtime_evaluate, timers_sweep
from segments.services.recompute import segment_recompute
from segments.services.static import static_members_replace
from tests.conftest import database_url_for_children
from tests.helpers import wait_until
from tests.segment_helpers import World, definition

VIEWED_TWICE = definition({"type": "event", "event": "product_viewed", "window": {"last": 7, "unit": "days"},
                           "count": {"operator": ">=", "value": 2}})
GERMANS = definition({"type": "trait", "field": "country", "operator": "=", "value": "DE"})
BUYERS = definition({"type": "transaction", "measure": "count", "window": {"last": 30, "unit": "days"},
                     "operator": ">=", "value": 1})


def make(actor, key, tree, **options) -> Segment:
    segment = segment_create(actor=actor, key=key, name=key.title(), definition=tree, **options)
    segment_recompute(run_id=SegmentRun.objects.filter(segment=segment).latest("id").pk)
    segment.refresh_from_db()
    return segment


def members_of(segment: Segment) -> set:
    return set(Membership.objects.filter(segment=segment, version_to__isnull=True).values_list("profile_id", flat=True))


@pytest.mark.django_db
def test_only_changed_profiles_and_affected_segments_are_evaluated(users):
    w = World(now=timezone.now())
    anna, ben = w.profile(country="FR"), w.profile(country="FR")
    viewers = make(users["alice"], "viewers", VIEWED_TWICE)
    germans = make(users["alice"], "germans", GERMANS)
    buyers = make(users["alice"], "buyers", BUYERS)
    w.events(anna, "product_viewed", [timedelta(minutes=5), timedelta(minutes=1)])
    w.events(ben, "product_viewed", [timedelta(minutes=5), timedelta(minutes=1)])  # not announced: stays out
    Profile.objects.filter(pk=anna).update(country="DE")  # a trait change not announced either
    result = realtime_evaluate(profile_ids=[str(anna)], event_names=["product_viewed"])
    assert result.evaluated == [viewers.pk]
    assert (result.entered, result.exited, result.locked) == (1, 0, [])
    assert members_of(viewers) == {anna}
    assert members_of(germans) == set() and members_of(buyers) == set()
    change = MembershipChange.objects.get(segment=viewers)
    assert (change.profile_id, change.kind, change.cause, change.definition_version) == (anna, "entered", "realtime", 1)
    viewers.refresh_from_db()
    assert viewers.member_count == 1 and viewers.realtime_evaluated_at is not None
    assert realtime_evaluate(profile_ids=[str(anna)], trait_names=["country"]).evaluated == [germans.pk]
    assert members_of(germans) == {anna}
    w.order(anna, 20, timedelta(minutes=1))
    assert realtime_evaluate(profile_ids=[str(anna)], event_names=["order_completed"]).evaluated == [buyers.pk]
    assert members_of(buyers) == {anna}


@pytest.mark.django_db
def test_absorbed_profiles_leave_every_segment_static_ones_included(users):
    w = World(now=timezone.now())
    survivor, absorbed = w.profile(country="DE"), w.profile(country="DE")
    w.identity(absorbed, "user_id", "u-77")
    germans = make(users["alice"], "germans", GERMANS)
    vip = segment_create(actor=users["alice"], key="vip", name="VIP", kind=Segment.Kind.STATIC)
    static_members_replace(segment=vip, actor=users["alice"], entries=[(1, "user_id", "u-77")])
    assert members_of(germans) == {survivor, absorbed} and members_of(vip) == {absorbed}
    Profile.objects.filter(pk=absorbed).update(merged_into=survivor)
    result = realtime_evaluate(profile_ids=[str(survivor), str(absorbed)], event_names=[])
    assert result.removed == 2
    assert members_of(germans) == {survivor} and members_of(vip) == set()
    assert set(MembershipChange.objects.filter(cause="merge").values_list("segment__key", "profile_id", "kind")) == {
        ("germans", absorbed, "exited"), ("vip", absorbed, "exited")}
    germans.refresh_from_db()
    vip.refresh_from_db()
    assert (germans.member_count, vip.member_count) == (1, 0)


@pytest.mark.django_db
def test_segments_that_use_a_changed_segment_follow_in_the_same_evaluation(users):
    w = World(now=timezone.now())
    anna = w.profile(country="DE")
    viewers = make(users["alice"], "viewers", VIEWED_TWICE)
    german_viewers = make(users["alice"], "german_viewers", definition({"type": "and", "conditions": [
        {"type": "segment", "operator": "in", "segment": "viewers"}, GERMANS["root"]]}))
    w.events(anna, "product_viewed", [timedelta(minutes=3), timedelta(minutes=2)])
    result = realtime_evaluate(profile_ids=[str(anna)], event_names=["product_viewed"])
    assert result.evaluated == [viewers.pk, german_viewers.pk]
    assert members_of(german_viewers) == {anna}


def test_a_segment_busy_with_a_recompute_is_left_for_a_retry(transactional_db, users):
    from segments.services.membership import segment_lock_key

    w = World(now=timezone.now())
    anna = w.profile()
    viewers = make(users["alice"], "viewers", VIEWED_TWICE)
    w.events(anna, "product_viewed", [timedelta(minutes=3), timedelta(minutes=2)])
    with psycopg.connect(database_url_for_children()) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [segment_lock_key(viewers.pk)])
        result = realtime_evaluate(profile_ids=[str(anna)], event_names=["product_viewed"])
    assert (result.evaluated, result.locked) == ([], [viewers.pk])
    assert members_of(viewers) == set()
    assert realtime_evaluate(profile_ids=[str(anna)], segment_ids=result.locked).evaluated == [viewers.pk]
    assert members_of(viewers) == {anna}


@pytest.mark.django_db
def test_queued_changes_are_drained_as_one_batch_with_the_union_of_their_names(users):
    from segments.models import RealtimeChange
    from segments.services.realtime import realtime_changes_queue, realtime_drain

    w = World(now=timezone.now())
    anna, ben, cleo = w.profile(country="DE"), w.profile(country="FR"), w.profile(country="FR")
    viewers, germans = make(users["alice"], "viewers", VIEWED_TWICE), make(users["alice"], "germans", GERMANS)
    w.events(anna, "product_viewed", [timedelta(minutes=3), timedelta(minutes=2)])
    Profile.objects.filter(pk=ben).update(country="DE")
    assert realtime_changes_queue(profile_ids=[anna, anna, "not-a-uuid"], event_names=["product_viewed"]) == 1
    assert realtime_changes_queue(profile_ids=[ben], trait_names=["country"]) == 1
    # An erasure announces the ids it deleted: nothing is queued for a profile that is gone.
    assert realtime_changes_queue(profile_ids=["00000000-0000-4000-8000-000000000000"]) == 0
    batches, more = realtime_drain()
    assert more is False and len(batches) == 1
    [batch] = batches
    assert (sorted(batch.profile_ids), batch.event_names, batch.trait_names) == (
        sorted([str(anna), str(ben)]), ["product_viewed"], ["country"])
    assert batch.result.evaluated == [viewers.pk, germans.pk]
    assert members_of(viewers) == {anna} and members_of(germans) == {anna, ben}
    assert not RealtimeChange.objects.exists()
    # A change without names (a merge) means every segment for the whole batch.
    Profile.objects.filter(pk=cleo).update(country="DE")
    realtime_changes_queue(profile_ids=[cleo])
    [batch], _ = realtime_drain()
    assert (batch.event_names, batch.trait_names, batch.result.evaluated) == ([], [], [viewers.pk, germans.pk])
    assert members_of(germans) == {anna, ben, cleo}


@pytest.mark.django_db
def test_a_batch_evaluates_each_segment_only_for_the_profiles_whose_change_it_reads(users):
    from segments.services.realtime import realtime_changes_queue, realtime_drain

    w = World(now=timezone.now())
    anna, ben, cleo = w.profile(country="FR"), w.profile(country="FR"), w.profile(country="FR")
    viewers, germans = make(users["alice"], "viewers", VIEWED_TWICE), make(users["alice"], "germans", GERMANS)
    viewing_germans = make(users["alice"], "viewing_germans", definition({"type": "and", "conditions": [
        {"type": "segment", "operator": "in", "segment": "germans"}, {"type": "trait", "field": "city",
                                                                      "operator": "is set"}]}))
    for person in (anna, ben, cleo):  # everyone now qualifies for both; only announced changes count
        w.events(person, "product_viewed", [timedelta(minutes=3), timedelta(minutes=2)])
    Profile.objects.filter(pk__in=[anna, ben, cleo]).update(country="DE", city="Berlin")
    realtime_changes_queue(profile_ids=[anna], event_names=["product_viewed"])
    realtime_changes_queue(profile_ids=[ben], trait_names=["country"])
    realtime_changes_queue(profile_ids=[cleo], event_names=["product_viewed"])
    realtime_changes_queue(profile_ids=[cleo])  # and a merge: anything may have changed
    [batch], _ = realtime_drain()
    assert batch.result.evaluated == [viewers.pk, germans.pk, viewing_germans.pk]
    assert members_of(viewers) == {anna, cleo}
    assert members_of(germans) == {ben, cleo}
    assert members_of(viewing_germans) == {ben, cleo}  # follows germans' profiles


@pytest.mark.django_db
def test_each_queued_profile_keeps_the_event_names_of_its_own_change():
    from segments.models import RealtimeChange
    from segments.services.realtime import realtime_changes_queue

    w = World(now=timezone.now())
    anna, ben = w.profile(), w.profile()
    assert realtime_changes_queue(profile_ids=[anna, ben], event_names=["Home", "product_viewed"],
                                  trait_names=["plan"], event_names_by_profile={anna: ["product_viewed"]}) == 2
    queued = {(c.profile_id, tuple(c.event_names), tuple(c.trait_names)) for c in RealtimeChange.objects.all()}
    assert queued == {(anna, ("product_viewed",), ("plan",)), (ben, ("Home", "product_viewed"), ("plan",))}


@pytest.mark.django_db
def test_a_broken_segment_is_skipped_and_the_rest_of_the_batch_applies(users):
    from segments.services.realtime import realtime_changes_queue, realtime_drain

    w = World(now=timezone.now())
    anna = w.profile(country="FR")
    germans = make(users["alice"], "germans", GERMANS)
    broken = make(users["alice"], "broken", GERMANS)
    # A definition the services would refuse, written behind their back (a bad migration, say).
    Segment.objects.filter(pk=broken.pk).update(definition=definition(
        {"type": "segment", "operator": "in", "segment": "no_such_segment"}))
    Profile.objects.filter(pk=anna).update(country="DE")
    realtime_changes_queue(profile_ids=[anna], trait_names=["country"])
    [batch], more = realtime_drain()
    assert (batch.result.evaluated, batch.result.failed, more) == ([germans.pk], [broken.pk], False)
    assert members_of(germans) == {anna}


def test_a_second_drainer_leaves_its_changes_to_the_running_one(transactional_db, users):
    from segments.models import RealtimeChange
    from segments.services.realtime import DRAIN_LOCK, realtime_changes_queue, realtime_drain

    w = World(now=timezone.now())
    anna = w.profile(country="DE")
    germans = make(users["alice"], "germans", GERMANS)
    Profile.objects.filter(pk=anna).update(country="FR")
    realtime_changes_queue(profile_ids=[anna], trait_names=["country"])
    with psycopg.connect(database_url_for_children()) as running:
        running.execute("SELECT pg_advisory_lock(%s)", [DRAIN_LOCK])
        assert realtime_drain() == ([], False)
        assert RealtimeChange.objects.count() == 1 and members_of(germans) == {anna}
        running.execute("SELECT pg_advisory_unlock(%s)", [DRAIN_LOCK])  # (closing frees it a moment later)
    # Now anyone may drain (a real worker left running by an earlier test may be faster).
    batches, more = realtime_drain()
    assert more is False and sum(batch.result.exited for batch in batches) in (0, 1)
    wait_until(lambda: not RealtimeChange.objects.exists() and members_of(germans) == set(), timeout=10)


@pytest.mark.django_db
def test_time_passing_flips_membership_through_the_timer_sweep(users):
    now = timezone.now()
    w = World(now=now)
    viewer, shopper = w.profile(), w.profile()
    w.event(viewer, "product_viewed", timedelta(seconds=58))
    w.event(shopper, "added_to_cart", timedelta(seconds=58))
    recent = make(users["alice"], "recent", definition({"type": "event", "event": "product_viewed",
                                                         "window": {"last": 1, "unit": "minutes"},
                                                         "count": {"operator": ">=", "value": 1}}))
    abandoners = make(users["alice"], "abandoners", definition({
        "type": "sequence", "first": {"event": "added_to_cart"}, "then": {"event": "checkout_started"}, "absent": True,
        "within": {"value": 1, "unit": "minutes"}, "window": {"last": 1, "unit": "days"}}))
    assert members_of(recent) == {viewer} and members_of(abandoners) == set()
    due = dict(Timer.objects.values_list("segment_id", "due_at"))
    assert due == {recent.pk: now - timedelta(seconds=58) + timedelta(minutes=1),
                   abandoners.pk: now - timedelta(seconds=58) + timedelta(minutes=1)}
    assert timers_sweep() == 0  # nothing due yet
    time.sleep(max(0.0, (max(due.values()) - timezone.now()).total_seconds()) + 0.2)
    assert timers_sweep() == 2
    assert members_of(recent) == set() and members_of(abandoners) == {shopper}
    assert set(MembershipChange.objects.filter(cause="timer").values_list("segment__key", "kind")) == {
        ("recent", "exited"), ("abandoners", "entered")}
    # The viewer's window has lapsed for good; the shopper stays until the day-long window lapses.
    assert list(Timer.objects.values_list("segment_id", "profile_id")) == [(abandoners.pk, shopper)]


def test_a_real_worker_applies_profiles_changed_and_the_lookup_shows_it(transactional_db, users, client,
                                                                        celery_worker_process):
    from cdp import apikeys

    w = World(now=timezone.now())
    anna = w.profile()
    w.identity(anna, "anonymous_id", "anon-anna")
    w.consent(anna, personalization=True)
    viewers = make(users["alice"], "viewers", VIEWED_TWICE, exposed_source_ids=[w.source.pk])
    _, read_key = apikeys.source_key_create(source=w.source, kind=SourceKey.Kind.READ)
    lookup = lambda: client.get("/v1/segments", {"anonymous_id": "anon-anna"},  # noqa: E731
                                HTTP_AUTHORIZATION=f"Bearer {read_key}").json()
    assert lookup() == {"segments": []}
    began = time.monotonic()
    with transaction.atomic():
        w.events(anna, "product_viewed", [timedelta(seconds=2), timedelta(seconds=1)])
        assert hooks.profiles_changed(profile_ids=[anna], event_names=["product_viewed"]) is True
    wait_until(lambda: lookup() == {"segments": ["viewers"]}, timeout=20, interval=0.05)
    elapsed = time.monotonic() - began
    assert elapsed < 20
    assert MembershipChange.objects.get(segment=viewers).cause == "realtime"
    # The membership is visible when its segment's transaction commits; the freshness figure for
    # the segment page is written just after, once the whole batch is evaluated.
    wait_until(lambda: Segment.objects.get(pk=viewers.pk).realtime_lag_ms is not None, timeout=20, interval=0.05)
    viewers.refresh_from_db()
    assert 0 <= viewers.realtime_lag_ms < 20_000
    # An absorbed profile sent through the same hook leaves the segment.
    other = w.profile()
    with transaction.atomic():
        Profile.objects.filter(pk=anna).update(merged_into=other)
        hooks.profiles_changed(profile_ids=[anna, other])
    wait_until(lambda: not Membership.objects.filter(segment=viewers, profile_id=anna).exists(), timeout=20)
    assert MembershipChange.objects.filter(segment=viewers, kind="exited", cause="merge").count() == 1


@pytest.mark.django_db
def test_invalid_ids_are_ignored_and_unknown_ids_cost_nothing(users):
    make(users["alice"], "viewers", VIEWED_TWICE)
    result = realtime_evaluate(profile_ids=["not-a-uuid", str(uuid.uuid4())], event_names=["product_viewed"])
    assert (result.evaluated, result.entered, result.removed) == ([], 0, 0)
