"""The full rebuild: SciPy components over the active links, repairs of what disagrees."""

import logging
import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from cdp.celery import app
from profiles.demo.generator import DemoOptions, demo_generate
from profiles.identifiers import identity_hash
from profiles.identity.rebuild import graph_copy_out, identity_graph_rebuild
from profiles.models import Event, Identity, IdentityLink, IdentityRebuild, Profile, ProfileMerge, Source
from tests.identity_helpers import event_insert, event_placement, live_profiles, profile_of_event, resolve_all


def _loggers() -> list[logging.Logger]:
    named = [item for item in logging.root.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    return [logging.root, *named]


def identity(kind, value):
    return Identity.objects.get(kind=kind, value_hash=identity_hash(kind, value))


def test_the_demo_graph_is_already_consistent(db):
    demo_generate(options=DemoOptions(profiles=150, days=10, seed=5, end=datetime(2026, 11, 1, tzinfo=UTC)))
    placement = event_placement()
    run = identity_graph_rebuild()
    assert (run.status, run.identities, run.links) == ("done", Identity.objects.count(),
                                                      IdentityLink.objects.filter(is_active=True).count())
    assert run.components == Profile.objects.filter(identities__isnull=False).distinct().count() == 150
    assert (run.identities_moved, run.profiles_absorbed, run.profiles_created, run.events_moved) == (0, 0, 0, 0)
    assert event_placement() == placement


def test_the_rebuild_repairs_a_missed_merge_and_a_missed_split(db):
    web = Source.objects.create(name="Web")
    a = event_insert(source=web, name="Page", anonymous_id="a")
    b = event_insert(source=web, name="Page", user_id="b")
    c = event_insert(source=web, name="Signed In", anonymous_id="c", user_id="c-user")
    c_only = event_insert(source=web, name="Page", anonymous_id="c")
    resolve_all()
    profile_a, profile_b, profile_c = profile_of_event(a), profile_of_event(b), profile_of_event(c)
    low, high = sorted((identity("anonymous_id", "a").id, identity("user_id", "b").id))
    # Simulate damage no service would do: a link written without merging, a link switched off
    # without recomputing its component.
    IdentityLink.objects.create(identity_a_id=low, identity_b_id=high, rule="staff", first_seen_at=Event.objects.get(
        id=a).timestamp, last_seen_at=Event.objects.get(id=a).timestamp)
    IdentityLink.objects.filter(rule="same_message").update(is_active=False)

    dry = identity_graph_rebuild(dry_run=True)
    assert (dry.profiles_absorbed, dry.profiles_created, dry.identities_moved) == (1, 1, 0)
    assert len(live_profiles()) == 3

    run = identity_graph_rebuild()
    assert (run.profiles_absorbed, run.profiles_created) == (1, 1)
    assert Profile.objects.get(id=profile_b).merged_into_id == profile_a
    assert profile_of_event(a) == profile_of_event(b) == profile_a
    assert profile_of_event(c) == profile_c  # the user id keeps the profile
    assert profile_of_event(c_only) not in (profile_a, profile_c)  # the device got a profile of its own
    assert identity("anonymous_id", "c").profile_id == profile_of_event(c_only)
    assert ProfileMerge.objects.filter(kind="merge", rule="rebuild").count() == 1
    assert ProfileMerge.objects.filter(kind="split").count() == 1
    again = identity_graph_rebuild()
    assert (again.profiles_absorbed, again.profiles_created, again.identities_moved) == (0, 0, 0)


def test_the_rebuild_attaches_transactions_written_after_their_event(db):
    from profiles.models import Transaction

    web = Source.objects.create(name="Web")
    event_id = event_insert(source=web, name="Order Completed", anonymous_id="buyer", properties={"order_id": "O-9"})
    resolve_all()
    late = Transaction.objects.create(source=web, order_id="O-9", amount="5.00", currency="EUR",
                                      timestamp=Event.objects.get(id=event_id).timestamp)
    identity_graph_rebuild()
    late.refresh_from_db()
    assert late.profile_id == profile_of_event(event_id)


def test_the_rebuild_command_reports_and_the_schedule_runs_it(db, capsys):
    call_command("identity_rebuild", "--dry-run")
    assert "0 identities, 0 active links, 0 components" in capsys.readouterr().out
    assert IdentityRebuild.objects.get().dry_run is True
    schedule = app.conf.beat_schedule
    assert schedule["identity-graph-rebuild"]["task"] == "profiles.identity_graph_rebuild"
    assert schedule["identity-resolve-sweep"]["task"] == "profiles.identity_resolve_pending"
    # What a worker does at start. Celery's Django fix-up calls django.setup() there, which
    # reconfigures logging with handlers bound to capsys's stream (closed after this test):
    # keep the process's handlers as they were.
    handlers = {logger: logger.handlers[:] for logger in _loggers()}
    try:
        app.loader.import_default_modules()
    finally:
        for logger, kept in handlers.items():
            logger.handlers[:] = kept
    assert {"profiles.identity_graph_rebuild", "profiles.identity_resolve_pending"} <= set(app.tasks)


def test_repairs_are_found_exactly_on_a_small_graph():
    """Vectorised comparison of components with profiles, on 128-bit profile ids."""
    import uuid

    import numpy as np

    from profiles.identity.rebuild import GraphArrays, components_of, repairs_find

    p = [uuid.UUID(int=(n + 1) * (1 << 70) + n) for n in range(6)]  # distinct, equal low halves for some
    #            A: P0 + P1 (missed merge) | B, C: P2 spread | D: P3 + P4, E: P3 | F: P5 alone
    identities = [(1, p[0]), (2, p[1]), (3, p[2]), (4, p[2]), (5, p[3]), (6, p[4]), (7, p[3]), (8, p[5])]
    links = [(1, 2), (5, 6)]
    graph = GraphArrays(np.array([i for i, _ in identities], dtype=np.int64),
                        np.frombuffer(b"".join(x.bytes for _, x in identities), dtype="<u8").reshape(-1, 2),
                        np.array([a for a, _ in links], dtype=np.int64), np.array([b for _, b in links], dtype=np.int64))
    count, labels = components_of(graph)
    repair = repairs_find(graph, count, labels)
    assert count == 6
    assert sorted(sorted(members) for members in repair.merge_components) == [[1, 2], [5, 6]]
    assert {uuid.UUID(bytes=raw) for raw in repair.split_profiles} == {p[2], p[3]}
    assert repair.profiles_to_absorb == 2

    # Every component mixed (no pure one to compare with), and P0 spread over two of them.
    identities = [(1, p[0]), (2, p[1]), (3, p[0]), (4, p[2])]
    links = [(1, 2), (3, 4)]
    graph = GraphArrays(np.array([i for i, _ in identities], dtype=np.int64),
                        np.frombuffer(b"".join(x.bytes for _, x in identities), dtype="<u8").reshape(-1, 2),
                        np.array([a for a, _ in links], dtype=np.int64), np.array([b for _, b in links], dtype=np.int64))
    count, labels = components_of(graph)
    repair = repairs_find(graph, count, labels)
    assert sorted(sorted(members) for members in repair.merge_components) == [[1, 2], [3, 4]]
    assert [uuid.UUID(bytes=raw) for raw in repair.split_profiles] == [p[0]]
    assert repair.profiles_to_absorb == 2


@pytest.mark.django_db(transaction=True)
def test_the_graph_is_read_over_two_connections_in_one_snapshot_or_alone_after_a_write():
    web = Source.objects.create(name="Web")
    for n in range(30):
        event_insert(source=web, name="Page", anonymous_id=f"device-{n}", user_id=f"user-{n // 3}")
    resolve_all()  # committed: other connections see it
    expected_identities = sorted(Identity.objects.values_list("id", "profile_id"))
    expected_links = sorted(IdentityLink.objects.filter(is_active=True).values_list("identity_a_id", "identity_b_id"))

    def read(*, write_first: bool):
        with transaction.atomic(), connection.cursor() as cursor:
            if write_first:
                cursor.execute("SELECT pg_current_xact_id()")  # as if this transaction had written rows
            graph = graph_copy_out(cursor.cursor)
        identities = sorted(zip(graph.identity_ids.tolist(), (uuid.UUID(bytes=p.tobytes()) for p in graph.profiles),
                                strict=True))
        return graph.readers, identities, sorted(zip(graph.link_a.tolist(), graph.link_b.tolist(), strict=True))

    assert read(write_first=False) == (2, expected_identities, expected_links)
    assert read(write_first=True) == (1, expected_identities, expected_links)
    assert len(expected_identities) == 40 and len(expected_links) == 30
