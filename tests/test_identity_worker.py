"""Ingestion -> resolution through a real Celery worker process, and the hook to segments."""

import base64
import json
import time
from pathlib import Path

import pytest
from celery import current_app
from django.db import transaction

from cdp import hooks
from profiles.identity.resolve import identity_resolve_batch
from profiles.models import Event, Profile, ProfileMerge, Source
from segments.services.realtime import realtime_drain_started
from tests.helpers import wait_until
from tests.identity_helpers import event_insert, event_placement, live_profiles, profile_of_event


def _ingest(source, **fields) -> int:
    """What the ingestion API does per request: store, then notify after commit."""
    with transaction.atomic():
        event_id = event_insert(source=source, **fields)
        assert hooks.events_ingested(source_id=source.id, count=1) is True
    return event_id


def test_an_ingested_event_is_attached_within_two_seconds_by_a_real_worker(celery_worker_process):
    web = Source.objects.create(name="Web")
    warm = _ingest(web, name="Page", anonymous_id="warm-up")  # a fresh worker imports the code base once
    wait_until(lambda: profile_of_event(warm), timeout=60)

    latencies = []
    for n in range(5):
        event_id = _ingest(web, name="Page", anonymous_id=f"visitor-{n}", user_id="member" if n % 2 else "")
        stored = time.monotonic()
        wait_until(lambda event_id=event_id: profile_of_event(event_id), timeout=10, interval=0.02)
        latencies.append(time.monotonic() - stored)

    print("latencies", [round(x, 3) for x in latencies])
    assert max(latencies) < 2.0, latencies
    assert "Task profiles.identity_resolve_pending" in "".join(celery_worker_process.output)
    assert profile_of_event(warm) != profile_of_event(event_id)


@pytest.fixture
def one_batch_per_task_run(monkeypatch):
    """The worker takes one batch of 40 per task run, so draining needs it to re-enqueue itself."""
    monkeypatch.setenv("CDP_IDENTITY_BATCH_SIZE", "40")
    monkeypatch.setenv("CDP_IDENTITY_TASK_SECONDS", "0")


def test_the_task_re_enqueues_itself_and_duplicate_notifications_are_harmless(one_batch_per_task_run,
                                                                            celery_worker_process):
    web = Source.objects.create(name="Web")
    expected = {}
    with transaction.atomic():
        for person in range(30):
            for step in range(7):
                event_id = event_insert(source=web, name="Page", anonymous_id=f"device-{person}",
                                        user_id=f"user-{person}" if step >= 3 else "")
                expected[event_id] = person
        for _ in range(4):  # four requests' worth of notifications for the same backlog
            hooks.events_ingested(source_id=web.id, count=210)

    wait_until(lambda: not Event.objects.filter(profile__isnull=True).exists(), timeout=90, interval=0.2)
    placement = event_placement()
    per_person = {}
    for event_id, person in expected.items():
        per_person.setdefault(person, set()).add(placement[event_id])
    assert all(len(profiles) == 1 for profiles in per_person.values())
    assert len(live_profiles()) == 30
    assert ProfileMerge.objects.count() == 0
    output = "".join(celery_worker_process.output)
    assert output.count("Task profiles.identity_resolve_pending") >= 6  # 210 events / 40 per run
    assert "Traceback" not in output


def _published(folder: Path, task_name: str) -> list[dict]:
    """Messages for `task_name` on the filesystem broker, consumed as a worker would (removed
    once read; a drain task clears its "queued" flag when it starts)."""
    found = []
    for path in sorted((folder / "queue").glob("*.msg")):
        message = json.loads(path.read_text())
        if message["headers"].get("task") == task_name:
            _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            found.append(kwargs)
            path.unlink()
    if found and task_name == hooks.REALTIME_DRAIN_TASK:
        realtime_drain_started()
    return found


def _stand_in(name: str):
    """Register a stand-in for another stage's task (its branch provides the real one) so the
    hook publishes; yield; unregister."""
    if name in current_app.tasks:
        yield
        return

    def stand_in(**kwargs):
        return None

    current_app.task(name=name)(stand_in)
    yield
    current_app.tasks.pop(name, None)


@pytest.fixture
def realtime_task():
    yield from _stand_in(hooks.REALTIME_DRAIN_TASK)


@pytest.fixture
def traits_task():
    yield from _stand_in(hooks.TRAITS_TASK)


@pytest.mark.django_db(transaction=True)
def test_segments_hear_about_survivors_and_absorbed_profiles_after_commit(_private_broker, realtime_task):
    if _private_broker is None:
        pytest.skip("reads the filesystem broker's queue")
    web = Source.objects.create(name="Web")
    event_insert(source=web, name="Page", anonymous_id="laptop")
    event_insert(source=web, name="Page", user_id="ann")
    from segments.models import RealtimeChange

    identity_resolve_batch(limit=100)
    _published(_private_broker, hooks.REALTIME_DRAIN_TASK)
    RealtimeChange.objects.all().delete()
    event_insert(source=web, type="identify", name="", anonymous_id="laptop", user_id="ann",
                 traits={"plan": "pro"})
    event_insert(source=web, name="Product Viewed", anonymous_id="laptop")

    with transaction.atomic():
        result = identity_resolve_batch(limit=100)
        # Segments' queue of changes is written in the same transaction; the drain task waits for the commit.
        assert _published(_private_broker, hooks.REALTIME_DRAIN_TASK) == []

    [survivor] = live_profiles()
    absorbed = Profile.objects.get(merged_into=survivor)
    assert _published(_private_broker, hooks.REALTIME_DRAIN_TASK) == [{}]
    queued = sorted((str(c.profile_id), c.event_names, c.trait_names) for c in RealtimeChange.objects.all())
    assert queued == sorted((str(profile_id), ["Product Viewed"], ["plan"]) for profile_id in (survivor.id, absorbed.id))
    assert result.merges == 1


@pytest.mark.django_db(transaction=True)
def test_computed_traits_hear_about_attached_and_moved_purchases(_private_broker, traits_task):
    if _private_broker is None:
        pytest.skip("reads the filesystem broker's queue")
    from django.contrib.auth.models import User

    from profiles.identity.split import identity_link_deactivate
    from profiles.models import IdentityLink
    from tests.identity_helpers import order_insert

    web = Source.objects.create(name="Web")
    event_insert(source=web, name="Page", user_id="ann")
    identity_resolve_batch(limit=100)
    [ann] = live_profiles()
    event_id, order = order_insert(source=web, order_id="W-1", anonymous_id="laptop")
    identity_resolve_batch(limit=100)
    laptop = profile_of_event(event_id)
    assert _published(_private_broker, hooks.TRAITS_TASK) == [{"profile_ids": [str(laptop)]}]

    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="ann")
    identity_resolve_batch(limit=100)  # the laptop's (younger) profile is absorbed into ann's
    order.refresh_from_db()
    assert order.profile_id == ann.id
    assert _published(_private_broker, hooks.TRAITS_TASK) == [{"profile_ids": sorted([str(ann.id), str(laptop)])}]

    link = IdentityLink.objects.get(rule="same_message")
    identity_link_deactivate(link_id=link.id, actor=User.objects.create_user("staff"), reason="wrong")
    order.refresh_from_db()
    assert order.profile_id == laptop  # back with the order event's anonymous id
    assert _published(_private_broker, hooks.TRAITS_TASK) == [{"profile_ids": sorted([str(ann.id), str(laptop)])}]
