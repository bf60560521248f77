"""cdp.flags: one queued message per stage under sustained load, never a commit left unseen."""

import os
import time

import pytest
from django.db import transaction

from cdp import flags, hooks
from profiles.identity.resolve import identity_resolve_pending
from profiles.models import Source
from tests.identity_helpers import event_insert, profile_of_event
from tests.test_identity_worker import _published

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(_private_broker):
    if _private_broker is None:
        pytest.skip("the file flags live beside the filesystem broker's queue")
    from tests.conftest import broker_purge

    broker_purge()
    return _private_broker


def test_a_file_flag_is_set_once_cleared_and_expires(broker):
    name = "cdp:test:flag"
    flags.flag_clear(name)
    assert flags.flag_set_once(name) is True
    assert flags.flag_set_once(name) is False  # a message is queued: do not send another
    assert (broker / "flags" / name).exists()
    flags.flag_clear(name)
    assert flags.flag_set_once(name) is True
    old = time.time() - 11
    os.utime(broker / "flags" / name, (old, old))  # its message was lost 11 s ago
    assert flags.flag_set_once(name, ttl=10) is True
    assert flags.flag_set_once(name, ttl=10) is False
    flags.flag_clear(name)
    flags.flag_clear(name)  # clearing twice is harmless


def _ingest(source, anonymous_id: str) -> int:
    with transaction.atomic():
        event_id = event_insert(source=source, name="Page", anonymous_id=anonymous_id)
        assert hooks.events_ingested(source_id=source.id, count=1) is True
    return event_id


def test_ingestion_queues_one_resolution_message_until_resolution_starts(broker):
    web = Source.objects.create(name="Web")
    first = [_ingest(web, f"visitor-{n}") for n in range(5)]
    # Five commits, one message: the queued task will claim all five.
    assert _published(broker, hooks.RESOLVE_TASK) == [{}]
    # The task starts (clears the flag before claiming) and claims what was committed.
    assert identity_resolve_pending(max_seconds=0).events == 5
    assert all(profile_of_event(event_id) for event_id in first)
    # Committed after the task began claiming: a message of its own.
    later = _ingest(web, "visitor-late")
    assert _published(broker, hooks.RESOLVE_TASK) == [{}]
    identity_resolve_pending(max_seconds=0)
    assert profile_of_event(later)


def test_a_lost_message_holds_events_back_only_until_its_flag_expires(broker):
    web = Source.objects.create(name="Web")
    _ingest(web, "first")
    for path in (broker / "queue").glob("*.msg"):  # the message is lost; its flag stays
        path.unlink()
    waiting = _ingest(web, "second")
    assert _published(broker, hooks.RESOLVE_TASK) == []  # the flag says one is queued
    flag = broker / "flags" / hooks.RESOLVE_QUEUED_FLAG
    old = time.time() - 11
    os.utime(flag, (old, old))
    last = _ingest(web, "third")  # the flag has expired: this commit sends again
    assert _published(broker, hooks.RESOLVE_TASK) == [{}]
    assert identity_resolve_pending(max_seconds=0).events == 3
    assert profile_of_event(waiting) and profile_of_event(last)
