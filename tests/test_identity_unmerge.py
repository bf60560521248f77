"""Merge and un-merge end to end, staff decisions on flagged cases, and concurrency (real
PostgreSQL connections in threads; transactional where other connections must see the data)."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction

from consent.models import AuditEntry
from profiles.identifiers import identity_hash
from profiles.identity.flags import FlagError, identity_flag_dismiss, identity_flag_link
from profiles.identity.resolve import identity_resolve_batch
from profiles.identity.split import UnmergeError, identity_link_deactivate, unmerge_preview
from profiles.models import (
    Event,
    Identity,
    IdentityFlag,
    IdentityLink,
    Profile,
    ProfileMerge,
    Source,
    Transaction,
)
from tests.identity_helpers import (
    T0,
    event_insert,
    event_placement,
    live_profiles,
    order_insert,
    profile_of_event,
    resolve_all,
)


@pytest.fixture
def web(db):
    return Source.objects.create(name="Web shop", kind=Source.Kind.WEBSITE)


def identity(kind: str, value: str) -> Identity:
    return Identity.objects.get(kind=kind, value_hash=identity_hash(kind, value))


def link_between(kind_a, value_a, kind_b, value_b) -> IdentityLink:
    ids = sorted((identity(kind_a, value_a).id, identity(kind_b, value_b).id))
    return IdentityLink.objects.get(identity_a_id=ids[0], identity_b_id=ids[1])


def two_people(web):
    """Ann browses anonymously on her laptop (and buys); Bob is a known user on his phone."""
    ann = [event_insert(source=web, type="identify", anonymous_id="laptop", timestamp=T0,
                       traits={"firstName": "Ann", "plan": "free"})]
    ann += [event_insert(source=web, name="Page", anonymous_id="laptop", timestamp=T0 + timedelta(minutes=m))
            for m in (1, 2)]
    order_event, order = order_insert(source=web, order_id="W-1", anonymous_id="laptop",
                                      timestamp=T0 + timedelta(minutes=3))
    ann.append(order_event)
    resolve_all()
    bob = [event_insert(source=web, type="identify", anonymous_id="phone", user_id="bob",
                        timestamp=T0 + timedelta(hours=1), traits={"firstName": "Bob", "plan": "pro", "age": 51})]
    bob += [event_insert(source=web, name="Page", user_id="bob", timestamp=T0 + timedelta(hours=1, minutes=m))
            for m in (1, 2)]
    resolve_all()
    return ann, bob, order


def test_merge_then_unmerge_puts_every_event_and_order_back(web, users):
    ann, bob, order = two_people(web)
    ann_profile, bob_profile = profile_of_event(ann[0]), profile_of_event(bob[0])
    before = event_placement()
    assert set(before.values()) == {ann_profile, bob_profile}

    # A wrong link: the laptop is seen logged in as bob (say, bob borrowed it once).
    wrong = event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob",
                         timestamp=T0 + timedelta(hours=2))
    resolve_all()
    survivor = Profile.objects.get(id=ann_profile)  # the older profile survives
    assert set(event_placement().values()) == {ann_profile}
    assert Profile.objects.get(id=bob_profile).merged_into_id == ann_profile
    order.refresh_from_db()
    assert order.profile_id == ann_profile
    survivor.refresh_from_db()
    assert (survivor.first_name, survivor.traits["plan"], survivor.age) == ("Bob", "pro", 51)  # newest wins

    link = link_between("anonymous_id", "laptop", "user_id", "bob")
    merge = ProfileMerge.objects.get(kind="merge")
    assert merge.link_id == link.id
    _, plan = unmerge_preview(link_id=link.id)
    assert [(p.profile_id, p.status) for p in plan.parts] == [(ann_profile, "keeps"), (bob_profile, "revived")]
    assert (plan.parts[1].events_moving, plan.parts[1].transactions_moving) == (4, 0)

    result = identity_link_deactivate(link_id=link.id, actor=users["dan"], reason="bob borrowed the laptop")

    after = event_placement()
    assert {e: after[e] for e in before} == before  # every event is where it was before
    assert after[wrong] == bob_profile  # the linking message carried bob's user id
    assert result.profiles == [ann_profile, bob_profile]
    assert (result.events_moved, result.identities_moved, result.transactions_moved) == (4, 2, 0)
    order.refresh_from_db()
    assert order.profile_id == ann_profile
    ann_row, bob_row = Profile.objects.get(id=ann_profile), Profile.objects.get(id=bob_profile)
    assert (ann_row.merged_into_id, bob_row.merged_into_id) == (None, None)
    assert (ann_row.first_name, ann_row.traits, ann_row.age) == ("Ann", {"plan": "free"}, None)  # her own again
    assert (bob_row.first_name, bob_row.traits, bob_row.age) == ("Bob", {"plan": "pro"}, 51)
    assert ann_row.last_seen_at == T0 + timedelta(minutes=3)
    link.refresh_from_db()
    assert (link.is_active, link.deactivated_by, link.deactivation_reason) == (False, users["dan"],
                                                                            "bob borrowed the laptop")
    split = ProfileMerge.objects.get(kind="split")
    assert (split.profile_id, split.other_profile_id, split.link_id, split.actor) == (
        ann_profile, bob_profile, link.id, users["dan"])
    merge.refresh_from_db()
    assert merge.undone_by_id == split.id
    audit = AuditEntry.objects.get(action="profile.unmerged")
    assert (audit.actor, audit.object_id, audit.details["events_moved"]) == (users["dan"], str(ann_profile), 4)

    # Staff separated them: the same evidence arriving again does not merge them back.
    again = event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob",
                         timestamp=T0 + timedelta(hours=3))
    resolve_all()
    assert profile_of_event(again) == bob_profile
    assert len(live_profiles()) == 2


def test_unmerging_an_edge_that_is_not_a_bridge_moves_nothing(web, users):
    event_insert(source=web, type="identify", anonymous_id="a", user_id="u", traits={"email": "u@mail.de"})
    event_insert(source=web, type="identify", anonymous_id="a", traits={"email": "u@mail.de"})
    resolve_all()
    [profile] = live_profiles()
    before = event_placement()
    link = link_between("anonymous_id", "a", "user_id", "u")  # a-u, a-email and u-email: a triangle
    _, plan = unmerge_preview(link_id=link.id)
    assert not plan.splits

    result = identity_link_deactivate(link_id=link.id, actor=users["dan"], reason="checking")
    assert (result.profiles, result.events_moved) == ([profile.id], 0)
    assert event_placement() == before
    assert ProfileMerge.objects.filter(kind="split").count() == 0
    assert AuditEntry.objects.filter(action="profile.unmerged").count() == 1


def test_unmerge_needs_a_reason_and_is_idempotent(web, users):
    event_insert(source=web, name="Signed In", anonymous_id="a", user_id="u")
    resolve_all()
    link = IdentityLink.objects.get()
    with pytest.raises(UnmergeError) as error:
        identity_link_deactivate(link_id=link.id, actor=users["dan"], reason="   ")
    assert error.value.code == "reason_required"
    link.refresh_from_db()
    assert link.is_active and len(live_profiles()) == 1

    first = identity_link_deactivate(link_id=link.id, actor=users["dan"], reason="wrong")
    second = identity_link_deactivate(link_id=link.id, actor=users["dan"], reason="wrong again")
    assert (first.already_inactive, second.already_inactive) == (False, True)
    assert len(live_profiles()) == 2
    assert ProfileMerge.objects.filter(kind="split").count() == 1
    with pytest.raises(UnmergeError):
        identity_link_deactivate(link_id=999999, actor=users["dan"], reason="x")


def test_staff_can_link_a_refused_edge_or_keep_it_apart(web, users):
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna")
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna.work")
    resolve_all()
    flag = IdentityFlag.objects.get()
    anna, work = identity("user_id", "anna").profile_id, identity("user_id", "anna.work").profile_id
    with pytest.raises(FlagError):
        identity_flag_link(flag_id=flag.id, actor=users["dan"], note="")
    assert Profile.objects.get(id=work).merged_into_id is None

    result = identity_flag_link(flag_id=flag.id, actor=users["dan"], note="same person, work login")
    assert (result.merged_into, result.absorbed) == (anna, work)
    assert Profile.objects.get(id=work).merged_into_id == anna
    assert set(Event.objects.values_list("profile_id", flat=True)) == {anna}
    flag.refresh_from_db()
    assert (flag.status, flag.resolved_by) == ("linked", users["dan"])
    assert IdentityLink.objects.filter(is_active=False).count() == 0
    assert ProfileMerge.objects.get().rule == "staff"
    assert AuditEntry.objects.filter(action="profile.merged", actor=users["dan"]).count() == 1
    with pytest.raises(FlagError) as error:
        identity_flag_dismiss(flag_id=flag.id, actor=users["dan"], note="")
    assert error.value.code == "closed"


def test_dismissing_a_flag_keeps_the_profiles_apart(web, users):
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="x1")
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="x2")
    resolve_all()
    flag = IdentityFlag.objects.get()
    identity_flag_dismiss(flag_id=flag.id, actor=users["dan"], note="siblings")
    flag.refresh_from_db()
    assert (flag.status, flag.resolution_note) == ("dismissed", "siblings")
    assert len(live_profiles()) == 2


# --- concurrency ------------------------------------------------------------------------------

def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def _in_thread(target, results, key):
    def run():
        try:
            results[key] = target()
        except Exception as exc:  # surfaced by the test
            results[key] = exc
        finally:
            connections.close_all()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met")


@pytest.mark.django_db(transaction=True)
def test_an_event_arriving_during_a_merge_ends_up_on_the_survivor():
    web = Source.objects.create(name="Web")
    ann, _, _ = two_people(web)
    ann_profile = profile_of_event(ann[0])
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob")  # will merge
    merged, release, results = threading.Event(), threading.Event(), {}

    def merge_and_hold():
        with transaction.atomic():  # the merge's locks are held until this block commits
            result = identity_resolve_batch(limit=100)
            merged.set()
            release.wait(30)
        return result

    holder = _in_thread(merge_and_hold, results, "merge")
    assert merged.wait(30)
    during = event_insert(source=web, name="Page", user_id="bob")  # bob's profile is being absorbed
    racer = _in_thread(lambda: identity_resolve_batch(limit=100), results, "racer")
    _wait(_waiting_on_a_lock)  # the second resolver waits on bob's profile lock
    release.set()
    holder.join(30)
    racer.join(30)

    assert results["merge"].merges == 1
    assert results["racer"].events == 1 and results["racer"].attempts >= 2  # it saw the merge and retried
    assert profile_of_event(during) == ann_profile
    assert len(live_profiles()) == 1
    assert Event.objects.filter(profile__isnull=True).count() == 0


@pytest.mark.django_db(transaction=True)
def test_an_event_arriving_during_an_unmerge_lands_on_its_side():
    from django.contrib.auth.models import User

    staff = User.objects.create_user("staff")
    web = Source.objects.create(name="Web")
    two_people(web)
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob")
    resolve_all()
    [merged] = live_profiles()
    bob_profile = ProfileMerge.objects.get().other_profile_id
    link = link_between("anonymous_id", "laptop", "user_id", "bob")
    started, release, results = threading.Event(), threading.Event(), {}

    def unmerge_and_hold():
        with transaction.atomic():
            result = identity_link_deactivate(link_id=link.id, actor=staff, reason="wrong")
            started.set()
            release.wait(30)
        return result

    holder = _in_thread(unmerge_and_hold, results, "unmerge")
    assert started.wait(30)
    during = event_insert(source=web, name="Page", user_id="bob")
    racer = _in_thread(lambda: identity_resolve_batch(limit=100), results, "racer")
    _wait(_waiting_on_a_lock)
    release.set()
    holder.join(30)
    racer.join(30)

    assert results["unmerge"].profiles == [merged.id, bob_profile]
    assert results["racer"].attempts >= 2
    assert profile_of_event(during) == bob_profile


@pytest.mark.django_db(transaction=True)
def test_two_resolvers_at_once_agree_with_one():
    """60 people, each with a user id and three devices, their events interleaved: two resolvers
    racing in small batches must end with exactly one profile per person and every event on it."""
    web = Source.objects.create(name="Web")
    expected = {}
    for step in range(4):
        for person in range(60):
            device = f"p{person}-d{step % 3}"
            user = f"user-{person}" if step >= 1 else ""
            expected[event_insert(source=web, name="Page", anonymous_id=device, user_id=user,
                                  timestamp=T0 + timedelta(minutes=step))] = person
            if step == 3:
                expected[event_insert(source=web, type="identify", anonymous_id=f"p{person}-d0",
                                      traits={"email": f"person{person}@mail.de"})] = person
    results = {}

    def drain():
        batches = []
        while True:
            result = identity_resolve_batch(limit=25)
            batches.append(result)
            if result.events == 0:
                return batches

    threads = [_in_thread(drain, results, n) for n in range(2)]
    for thread in threads:
        thread.join(120)
    for batches in results.values():
        assert not isinstance(batches, Exception), batches

    assert sum(b.events for batches in results.values() for b in batches) == len(expected)
    assert Event.objects.filter(profile__isnull=True).count() == 0
    placement = event_placement()
    by_person = {}
    for event_id, person in expected.items():
        by_person.setdefault(person, set()).add(placement[event_id])
    assert all(len(profiles) == 1 for profiles in by_person.values())
    assert len({next(iter(p)) for p in by_person.values()}) == 60
    assert len(live_profiles()) == 60
    assert Identity.objects.count() == 60 * (3 + 1 + 1)
    assert not Profile.objects.filter(merged_into__isnull=False, merged_into__merged_into__isnull=False).exists()
    assert Transaction.objects.count() == 0
