"""Full recomputes: the versioned swap, history, stale runs, failures, the dispatcher, a killed worker."""

import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from profiles.models import Profile
from segments.models import Membership, MembershipChange, Segment, SegmentRun
from segments.services.definitions import segment_create, segment_update
from segments.services.recompute import membership_cleanup, recompute_dispatch, segment_recompute
from tests.conftest import database_url_for_children
from tests.helpers import wait_until
from tests.segment_helpers import World, definition

DE = definition({"type": "trait", "field": "country", "operator": "=", "value": "DE"})


def current_members(segment: Segment) -> set:
    segment.refresh_from_db()
    return set(Membership.objects.filter(segment=segment, version_from__lte=segment.membership_version)
               .exclude(version_to__lte=segment.membership_version).values_list("profile_id", flat=True))


def run_latest(segment: Segment):
    return segment_recompute(run_id=SegmentRun.objects.filter(segment=segment).latest("id").pk)


@pytest.mark.django_db
def test_recompute_swaps_the_set_and_records_history_with_the_definition_version(users):
    w = World()
    anna, ben, cleo = w.profile(country="DE"), w.profile(country="DE"), w.profile(country="FR")
    segment = segment_create(actor=users["alice"], key="germans", name="Germans", definition=DE)
    result = run_latest(segment)
    assert (result.status, result.size, result.entered, result.exited) == ("succeeded", 2, 2, 0)
    assert current_members(segment) == {anna, ben}
    assert (segment.membership_version, segment.member_count, segment.status) == (1, 2, Segment.Status.OK)
    first_entry = Membership.objects.get(segment=segment, profile_id=anna).entered_at

    Profile.objects.filter(pk=ben).update(country="FR")
    segment_update(segment=segment, actor=users["alice"],
                   definition=definition({"type": "trait", "field": "country", "operator": "in", "value": ["DE", "FR"]}))
    segment.refresh_from_db()
    assert segment.definition_version == 2
    run_latest(segment)
    assert current_members(segment) == {anna, ben, cleo}
    assert Membership.objects.get(segment=segment, profile_id=anna).entered_at == first_entry  # stayed: no re-entry

    segment_update(segment=segment, actor=users["alice"], definition=DE)
    run_latest(segment)
    assert current_members(segment) == {anna}
    history = list(MembershipChange.objects.filter(segment=segment).order_by("membership_version", "kind", "profile_id")
                   .values_list("profile_id", "kind", "definition_version", "membership_version", "cause"))
    assert history == sorted([
        (anna, "entered", 1, 1, "recompute"), (ben, "entered", 1, 1, "recompute"),
        (cleo, "entered", 2, 2, "recompute"),
        (ben, "exited", 3, 3, "recompute"), (cleo, "exited", 3, 3, "recompute"),
    ], key=lambda row: (row[3], row[1], row[0]))
    # The closed rows of the last swap are invisible already and go in the batched clean-up.
    assert Membership.objects.filter(segment=segment).count() == 3
    assert membership_cleanup(segment_id=segment.pk, batch=1) == 2
    assert list(Membership.objects.filter(segment=segment).values_list("profile_id", flat=True)) == [anna]


@pytest.mark.django_db
def test_a_stale_run_never_overwrites_a_newer_one(users):
    w = World()
    anna = w.profile(country="DE")
    segment = segment_create(actor=users["alice"], key="germans", name="Germans", definition=DE)
    old_run = SegmentRun.objects.get(segment=segment)
    SegmentRun.objects.filter(pk=old_run.pk).update(requested_at=timezone.now() - timedelta(minutes=5))
    newer = SegmentRun.objects.create(segment=segment, trigger="manual", requested_at=timezone.now())
    assert segment_recompute(run_id=newer.pk).status == "succeeded"
    Profile.objects.filter(pk=anna).update(country="FR")  # the old run would now empty the segment
    assert segment_recompute(run_id=old_run.pk).status == SegmentRun.Status.STALE
    assert current_members(segment) == {anna}
    assert segment.membership_version == 1
    old_run.refresh_from_db()
    assert (old_run.status, old_run.error) == ("stale", "a run requested later already computed this definition")
    # A finished run is never run again (a redelivered task is a no-op).
    assert segment_recompute(run_id=newer.pk).status == "skipped"


@pytest.mark.django_db
def test_a_failure_before_the_swap_keeps_the_old_members_and_shows_failing(client, users):
    w = World()
    anna, ben = w.profile(country="DE"), w.profile(country="DE")
    segment = segment_create(actor=users["alice"], key="germans", name="Germans", definition=DE)
    run_latest(segment)
    Profile.objects.filter(pk=ben).update(country="FR")
    # A definition that became unusable (a segment it used is gone) fails inside the transaction.
    Segment.objects.filter(pk=segment.pk).update(definition=definition(
        {"type": "segment", "operator": "in", "segment": "deleted_meanwhile"}))
    run = SegmentRun.objects.create(segment=segment, trigger="manual", requested_at=timezone.now())
    with pytest.raises(Exception, match="unknown or archived segment"):
        segment_recompute(run_id=run.pk)
    segment.refresh_from_db()
    assert current_members(segment) == {anna, ben}
    assert (segment.membership_version, segment.member_count) == (1, 2)
    assert (segment.status, segment.consecutive_failures) == (Segment.Status.FAILING, 1)
    assert segment.last_error == "root: unknown or archived segment 'deleted_meanwhile'"
    run.refresh_from_db()
    assert (run.status, run.error, run.attempts) == ("failed", segment.last_error, 1)
    assert MembershipChange.objects.filter(segment=segment).count() == 2  # only the first run's entries
    client.force_login(users["alice"])
    listing = client.get(reverse("segments:list")).content.decode()
    assert "failing (1)" in listing
    page = client.get(reverse("segments:detail", args=["germans"])).content.decode()
    assert "1 failed attempt: root: unknown or archived segment" in page
    assert "retried automatically; the schedule continues" in page


@pytest.mark.django_db
def test_the_dispatcher_queues_due_segments_once_and_never_drops_one(users, django_capture_on_commit_callbacks):
    now = timezone.now()
    due = segment_create(actor=users["alice"], key="due", name="Due", definition=DE, schedule_minutes=60)
    later = segment_create(actor=users["alice"], key="later", name="Later", definition=DE, schedule_minutes=60)
    manual = segment_create(actor=users["alice"], key="manual", name="Manual", definition=DE)
    failing = segment_create(actor=users["alice"], key="failing", name="Failing", definition=DE, schedule_minutes=15)
    SegmentRun.objects.update(status=SegmentRun.Status.SUCCEEDED)  # the creation runs are done
    Segment.objects.filter(key__in=["due", "failing"]).update(next_run_at=now - timedelta(seconds=1))
    Segment.objects.filter(key="failing").update(status=Segment.Status.FAILING, consecutive_failures=4)
    Segment.objects.filter(key="later").update(next_run_at=now + timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert recompute_dispatch(now=now) == 2
        assert recompute_dispatch(now=now) == 0  # claimed: a second beat queues nothing
    assert len(callbacks) == 2
    queued = SegmentRun.objects.filter(status=SegmentRun.Status.QUEUED)
    assert sorted(queued.values_list("segment__key", "trigger")) == [("due", "schedule"), ("failing", "schedule")]
    for segment, minutes in ((due, 60), (failing, 15)):
        segment.refresh_from_db()
        assert segment.next_run_at == now + timedelta(minutes=minutes)
    later.refresh_from_db()
    manual.refresh_from_db()
    assert later.next_run_at == now + timedelta(minutes=5)
    assert manual.next_run_at is None


@pytest.fixture
def committed_segment(transactional_db, users):
    w = World()
    people = [w.profile(country="DE") for _ in range(5)]
    segment = segment_create(actor=users["alice"], key="germans", name="Germans", definition=DE)
    run_latest(segment)
    segment.refresh_from_db()
    return segment, people


def _backend_waiting_on_segment_update():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                       "AND query LIKE 'UPDATE \"segments_segment\"%%'")
        row = cursor.fetchone()
        return row[0] if row else None


def _backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1


def test_a_killed_worker_mid_recompute_leaves_the_previous_membership_intact(committed_segment, celery_worker_process):
    from segments.services.recompute import segment_recompute_request

    segment, people = committed_segment
    Profile.objects.filter(pk__in=people[:3]).update(country="FR")
    history_before = MembershipChange.objects.count()
    blocker = psycopg.connect(database_url_for_children())
    try:
        # Hold the segment row: the worker computes, writes its difference, then blocks on the
        # pointer move, which is where we kill it.
        blocker.execute("SELECT id FROM segments_segment WHERE id = %s FOR NO KEY UPDATE", [segment.pk])
        with transaction.atomic():
            run = segment_recompute_request(segment=segment, trigger="manual")
        backend = wait_until(_backend_waiting_on_segment_update, timeout=60)
        os.killpg(celery_worker_process.process.pid, signal.SIGKILL)
        celery_worker_process.process.wait(10)
    finally:
        blocker.rollback()
        blocker.close()
    # The orphaned backend finds its client gone and rolls back.
    deadline = time.monotonic() + 30
    while _backend_alive(backend) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _backend_alive(backend)
    assert current_members(segment) == set(people)
    assert (segment.membership_version, segment.member_count) == (1, 5)
    assert MembershipChange.objects.count() == history_before
    assert Membership.objects.filter(segment=segment).count() == 5  # no half-written rows
    # The interrupted run can run again and completes.
    assert segment_recompute(run_id=run.pk).status == "succeeded"
    assert current_members(segment) == set(people[3:])


def test_a_real_worker_computes_a_segment_saved_through_the_api(transactional_db, users, client, celery_worker_process):
    w = World()
    germans = {w.profile(country="DE") for _ in range(3)}
    w.profile(country="FR")
    client.force_login(users["alice"])
    response = client.post("/api/segments/", {"key": "germans", "name": "Germans", "definition": DE,
                                              "schedule_minutes": 60}, content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "new"
    segment = Segment.objects.get(key="germans")
    wait_until(lambda: Segment.objects.get(pk=segment.pk).status == Segment.Status.OK, timeout=30)
    assert current_members(segment) == germans
    assert client.get("/api/segments/germans/").json()["member_count"] == 3
    run = SegmentRun.objects.get(segment=segment)
    assert (run.status, run.trigger, run.size, run.entered) == ("succeeded", "created", 3, 3)
