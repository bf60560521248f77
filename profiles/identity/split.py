"""Un-merge: deactivate an edge and recompute its component.

When the remaining active edges no longer connect a profile's identities, the profile splits
into parts. Each part gets a profile id:
- the current profile stays with the part holding most identities that started on it;
- another part gets back a profile that was absorbed into this one and started with the
  part's identities (the most recently absorbed first), revived as it was when absorbed;
- any other part gets a new profile.
Events then go to the part of their main identifier (userId, else anonymousId: the same rule
the resolver attached them by), transactions follow their order event, and each part's traits,
first/last seen and device are recomputed. So merging then un-merging puts every event back
where it was. Consent is re-derived per part from the part's own decisions
(consent.services.state.consent_profiles_split): a split never grants a part anything its
person did not grant.

`split_plan` only reads (the un-merge screen shows it as "what will move"); `split_apply`
writes. Both run inside the caller's transaction, with the graph lock (shared) and the
profile's lock held.
"""

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from cdp import crypto, hooks
from consent.services import audit_record
from consent.services.state import consent_profiles_split
from profiles.identity import locks, store
from profiles.identity.blocklist import blocklist_load
from profiles.identity.devices import device_fields
from profiles.identity.extract import Extractor, Node
from profiles.identity.traits import ProfileState, Provenance, observations
from profiles.identity.unionfind import UnionFind
from profiles.models import IdentityLink

# Index profiles_event_profile_name_ts (profile_id, ...).
EVENT_COLUMNS = sql.SQL("""SELECT e.id, e.timestamp, e.source_id, e.type, e.name, e.anonymous_id, e.user_id,
       CASE WHEN e.type = 'identify' THEN e.traits END,
       e.context #>> '{{device,type}}', e.context #>> '{{os,name}}', e.context #>> '{{browser,name}}',
       e.context ->> 'userAgent',
       CASE WHEN e.type = 'track' AND e.name = ANY(%s) THEN {order_id} END
FROM profiles_event e WHERE e.profile_id = %s""").format(order_id=store.ORDER_ID_SQL)


class UnmergeError(Exception):
    """The un-merge cannot be done as asked (message is for the user)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Part:
    profile_id: object
    status: str  # "keeps" | "revived" | "new"
    identity_ids: list = field(default_factory=list)
    events: list = field(default_factory=list)  # event rows that end up on this part
    events_moving: int = 0
    transactions_moving: int = 0


@dataclass
class SplitPlan:
    profile_id: object
    parts: list[Part]
    identities: dict  # identity id -> (kind, value_hash, origin profile)

    @property
    def splits(self) -> bool:
        return len(self.parts) > 1


@dataclass
class SplitResult:
    profile_id: object
    already_inactive: bool = False
    profiles: list = field(default_factory=list)  # every part's profile id, the kept one first
    events_moved: int = 0
    transactions_moved: int = 0
    identities_moved: int = 0


def split_plan(cursor, *, profile_id, without_link_ids=()) -> SplitPlan:
    """The parts `profile_id` would split into with these links deactivated (reads only)."""
    cursor.execute("SELECT id, kind, value_hash, COALESCE(origin_profile_id, profile_id) FROM profiles_identity "
                   "WHERE profile_id = %s", [profile_id])  # index identity_profile_kind_idx
    identities = {row[0]: (row[1], bytes(row[2]), row[3]) for row in cursor.fetchall()}
    ids = list(identities)
    # identitylink_uniq leads with identity_a_id; both ends of an active link share a profile.
    cursor.execute("SELECT id, identity_a_id, identity_b_id FROM profiles_identitylink "
                   "WHERE identity_a_id = ANY(%s) AND is_active", [ids])
    groups = UnionFind()
    for identity_id in ids:
        groups.add(identity_id)
    excluded = set(without_link_ids)
    for link_id, a, b in cursor.fetchall():
        if link_id not in excluded and b in identities:
            groups.union(a, b, link_id)
    members = defaultdict(list)
    for identity_id in ids:
        members[groups.find(identity_id)].append(identity_id)
    parts = _assign(cursor, profile_id, list(members.values()), identities)
    if len(parts) > 1:
        _place_events(cursor, profile_id, parts, identities)
    elif parts:
        parts[0].events = None  # not needed: nothing moves
    return SplitPlan(profile_id, parts, identities)


def _assign(cursor, profile_id, groups: list[list], identities: dict) -> list[Part]:
    if len(groups) <= 1:
        return [Part(profile_id, "keeps", groups[0] if groups else [])]
    origins = [Counter(identities[i][2] for i in group) for group in groups]
    # Ties go to the part holding a user id (a known person keeps the id client sites have).
    has_user = [any(identities[i][0] == "user_id" for i in group) for group in groups]
    keeper = max(range(len(groups)), key=lambda n: (origins[n][profile_id], has_user[n], len(groups[n]),
                                                    -min(groups[n])))
    # Profiles absorbed into this one, most recently absorbed first.
    cursor.execute("SELECT p.id, max(m.created_at) FROM profiles_profile p LEFT JOIN profiles_profilemerge m "
                   "ON m.other_profile_id = p.id AND m.kind = 'merge' WHERE p.merged_into_id = %s GROUP BY p.id",
                   [profile_id])
    absorbed = {pid: at for pid, at in cursor.fetchall()}
    parts, taken = [None] * len(groups), {profile_id}
    parts[keeper] = Part(profile_id, "keeps", sorted(groups[keeper]))
    order = sorted((n for n in range(len(groups)) if n != keeper), key=lambda n: (-len(groups[n]), min(groups[n])))
    for n in order:
        candidates = [pid for pid in origins[n] if pid in absorbed and pid not in taken]
        if candidates:
            chosen = max(candidates, key=lambda pid: (absorbed[pid] is not None, absorbed[pid] or 0,
                                                      origins[n][pid], str(pid)))
            parts[n] = Part(chosen, "revived", sorted(groups[n]))
            taken.add(chosen)
        else:
            parts[n] = Part(uuid.uuid4(), "new", sorted(groups[n]))
    return [parts[keeper]] + [parts[n] for n in order]


def _place_events(cursor, profile_id, parts: list[Part], identities: dict) -> None:
    part_of_node = {Node(identities[i][0], identities[i][1]): part for part in parts for i in part.identity_ids}
    extractor = Extractor(blocklist_load())
    cursor.execute(EVENT_COLUMNS, [list(store.ORDER_EVENT_NAMES), profile_id])
    for row in cursor.fetchall():
        (event_id, timestamp, source_id, type_, name, anonymous_id, user_id, traits, *device, order_id) = row
        found = extractor.message(type="track", user_id=user_id, anonymous_id=anonymous_id)
        part = part_of_node.get(found.primary, parts[0])
        traits = store.json_value(traits)
        part.events.append((event_id, timestamp, source_id, traits if isinstance(traits, dict) else None,
                            tuple(device), order_id))
        if part is not parts[0]:
            part.events_moving += 1
            part.transactions_moving += order_id is not None


_MOVE_IDENTITIES = sql.SQL("UPDATE profiles_identity i SET origin_profile_id = COALESCE(i.origin_profile_id, "
                           "i.profile_id), profile_id = s.profile_id FROM {} WHERE i.id = s.id")
# Primary key (id, timestamp) of each partition.
_MOVE_EVENTS = sql.SQL("UPDATE profiles_event e SET profile_id = s.profile_id FROM {} "
                       "WHERE e.id = s.id AND e.timestamp = s.timestamp AND e.profile_id = %s")
# Unique index transaction_source_order_uniq (source_id, order_id).
_MOVE_ORDERS = sql.SQL("UPDATE profiles_transaction t SET profile_id = s.profile_id FROM {} "
                       "WHERE t.source_id = s.source_id AND t.order_id = s.order_id AND t.profile_id = %s")


def _moved(cursor, statement: sql.SQL, columns, rows, *params) -> int:
    """Run a re-pointing statement over rows sent as arrays; how many rows it moved."""
    rows = list(rows)
    if not rows:
        return 0
    source, arrays = store.rows_unnest(columns, rows)
    cursor.execute(statement.format(source), [*arrays, *params])
    return cursor.rowcount


def split_apply(cursor, plan: SplitPlan, *, now, link_id=None, actor_id=None, reason: str = "") -> SplitResult:
    """Write a split plan: re-point identities, events, transactions; revive or create profiles;
    recompute each part's traits and activity; log the split."""
    result = SplitResult(plan.profile_id, profiles=[part.profile_id for part in plan.parts])
    if not plan.splits:
        return result
    others = plan.parts[1:]
    new_states = [ProfileState(part.profile_id) for part in others if part.status == "new"]
    store.states_write(cursor, new_states, now=now, insert=True)
    cursor.execute("UPDATE profiles_profile SET merged_into_id = NULL, updated_at = %s WHERE id = ANY(%s)",
                   [now, [part.profile_id for part in others if part.status == "revived"]])
    result.identities_moved = _moved(cursor, _MOVE_IDENTITIES, [("id", "bigint"), ("profile_id", "uuid")],
                                     [(i, part.profile_id) for part in others for i in part.identity_ids])
    result.events_moved = _moved(cursor, _MOVE_EVENTS, [("id", "bigint"), ("timestamp", "timestamptz"),
                                                        ("profile_id", "uuid")],
                                 [(e[0], e[1], part.profile_id) for part in others for e in part.events],
                                 plan.profile_id)
    result.transactions_moved = _moved(cursor, _MOVE_ORDERS, [("source_id", "bigint"), ("order_id", "text"),
                                                              ("profile_id", "uuid")],
                                       [(e[2], e[5], part.profile_id) for part in others for e in part.events
                                        if e[5] and e[2]], plan.profile_id)
    if result.transactions_moved:
        hooks.transactions_changed(profile_ids=result.profiles)
    _redirect_absorbed(cursor, plan, now)
    changed_traits = _recompute_states(cursor, plan, now)
    split_ids = _log(cursor, plan, now=now, link_id=link_id, actor_id=actor_id, reason=reason)
    cursor.execute("UPDATE profiles_profilemerge m SET undone_by_id = s.id FROM unnest(%s::uuid[], %s::bigint[]) "
                   "AS s(other, id) WHERE m.kind = 'merge' AND m.other_profile_id = s.other AND m.undone_by_id IS NULL",
                   [[p.profile_id for p in others if p.status == "revived"],
                    [split_ids[p.profile_id] for p in others if p.status == "revived"]])
    consent_profiles_split(keeper_id=plan.profile_id, part_ids=result.profiles, actor_id=actor_id)
    hooks.profiles_changed(profile_ids=result.profiles, trait_names=changed_traits)
    return result


def _redirect_absorbed(cursor, plan: SplitPlan, now) -> None:
    """Profiles absorbed earlier now redirect to the part holding most of their identities."""
    votes = defaultdict(Counter)
    for part in plan.parts:
        for identity_id in part.identity_ids:
            votes[plan.identities[identity_id][2]][part.profile_id] += 1
    rows = [(origin, counter.most_common(1)[0][0]) for origin, counter in votes.items()
            if origin != plan.profile_id and counter.most_common(1)[0][0] not in (plan.profile_id, origin)]
    if rows:
        cursor.execute("UPDATE profiles_profile p SET merged_into_id = r.target, updated_at = %s "
                       "FROM unnest(%s::uuid[], %s::uuid[]) AS r(id, target) "
                       "WHERE p.id = r.id AND p.merged_into_id = %s",
                       [now, [r[0] for r in rows], [r[1] for r in rows], plan.profile_id])


def _recompute_states(cursor, plan: SplitPlan, now) -> set:
    """Traits: the kept profile goes back to its state before the earliest merge now undone,
    plus the profiles still merged into it; revived ones are as they were when absorbed; then
    each part re-applies the identify traits of its own events. Activity comes from events."""
    keeper, others = plan.parts[0], plan.parts[1:]
    states = store.states_load(cursor, [part.profile_id for part in plan.parts if part.status != "new"])
    for part in others:
        if part.status == "new":
            states[part.profile_id] = ProfileState(part.profile_id)
    keeper_state = _keeper_state(cursor, plan)
    if keeper_state is not None:
        states[keeper.profile_id] = keeper_state
    authority = store.sources_authority(cursor)
    changed = set()
    for part in plan.parts:
        state = states[part.profile_id]
        for _, timestamp, source_id, traits, _, _ in sorted(part.events, key=lambda e: (e[1], e[0])):
            if traits:
                provenance = Provenance(timestamp, source_id, authority.get(source_id, False))
                for name, value in observations(traits).items():
                    state.offer(name, value, provenance)
        if part.events:
            newest = max(part.events, key=lambda e: (e[1], e[0]))
            device = device_fields(*newest[4])
            state.seen = {"first_seen_at": min(e[1] for e in part.events), "last_seen_at": newest[1],
                          "last_device_type": device[0], "last_os": device[1], "last_browser": device[2]}
        changed |= state.trait_names()
    store.states_write(cursor, [states[part.profile_id] for part in plan.parts], now=now)
    return changed


def _keeper_state(cursor, plan: SplitPlan) -> ProfileState | None:
    gone = [part.profile_id for part in plan.parts[1:]]
    gone_origins = {plan.identities[i][2] for part in plan.parts[1:] for i in part.identity_ids}
    cursor.execute("SELECT other_profile_id, created_at, state_before FROM profiles_profilemerge "
                   "WHERE kind = 'merge' AND profile_id = %s AND undone_by_id IS NULL ORDER BY created_at, id",
                   [plan.profile_id])
    merges = cursor.fetchall()
    undone = [m for m in merges if m[0] in gone or m[0] in gone_origins]
    if not undone or undone[0][2] is None:
        return None
    first = undone[0]
    state = ProfileState.from_snapshot(plan.profile_id, orjson.loads(crypto.decrypt(first[2])))
    still_merged = [m[0] for m in merges if m[1] >= first[1] and m not in undone]
    for absorbed_state in store.states_load(cursor, still_merged).values():
        state.absorb(absorbed_state)
    return state


def _log(cursor, plan: SplitPlan, *, now, link_id, actor_id, reason) -> dict:
    ids = {}
    rule = ""
    if link_id:
        cursor.execute("SELECT rule FROM profiles_identitylink WHERE id = %s", [link_id])
        row = cursor.fetchone()
        rule = row[0] if row else ""
    for part in plan.parts[1:]:
        cursor.execute(
            "INSERT INTO profiles_profilemerge (kind, profile_id, other_profile_id, link_id, rule, created_at, actor_id, "
            "reason, events_moved, transactions_moved, identities_moved) VALUES ('split', %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s) RETURNING id",
            [plan.profile_id, part.profile_id, link_id, rule or "staff", now, actor_id, reason, part.events_moving,
             part.transactions_moving, len(part.identity_ids)])
        ids[part.profile_id] = cursor.fetchone()[0]
    return ids


# --- services ---------------------------------------------------------------------------------

def _lock_component_of(cursor, identity_id: int):
    """Lock the profile holding this identity; return its id (re-checked under the lock)."""
    for _ in range(20):
        cursor.execute("SELECT profile_id FROM profiles_identity WHERE id = %s", [identity_id])
        row = cursor.fetchone()
        if row is None:
            raise UnmergeError("not_found", "That identifier no longer exists.")
        locked = locks.profiles_lock(cursor, [row[0]])
        cursor.execute("SELECT profile_id FROM profiles_identity WHERE id = %s", [identity_id])
        if cursor.fetchone()[0] == row[0] and row[0] in locked and locked[row[0]][1] is None:
            return row[0]
    raise UnmergeError("busy", "The profile keeps changing; try again in a moment.")


def unmerge_preview(*, link_id: int) -> tuple[IdentityLink, SplitPlan]:
    """What deactivating this link would do (reads only; nothing is locked or written)."""
    link = IdentityLink.objects.select_related("identity_a", "identity_b").get(id=link_id)
    with connection.cursor() as cursor:
        plan = split_plan(cursor.cursor, profile_id=link.identity_a.profile_id,
                          without_link_ids=[link.id] if link.is_active else [])
    return link, plan


@transaction.atomic
def identity_link_deactivate(*, link_id: int, actor, reason: str) -> SplitResult:
    """Un-merge: deactivate a link (with a reason), split its component if it falls apart, audit."""
    reason = (reason or "").strip()
    if not reason:
        raise UnmergeError("reason_required", "Give a reason for the un-merge.")
    now = timezone.now()
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        locks.graph_lock_shared(cursor)
        cursor.execute("SELECT identity_a_id, is_active FROM profiles_identitylink WHERE id = %s", [link_id])
        row = cursor.fetchone()
        if row is None:
            raise UnmergeError("not_found", "That link does not exist.")
        profile_id = _lock_component_of(cursor, row[0])
        cursor.execute("UPDATE profiles_identitylink SET is_active = false, deactivated_at = %s, "
                       "deactivated_by_id = %s, deactivation_reason = %s WHERE id = %s AND is_active",
                       [now, actor.id, reason[:2000], link_id])
        if cursor.rowcount == 0:
            return SplitResult(profile_id, already_inactive=True, profiles=[profile_id])
        plan = split_plan(cursor, profile_id=profile_id)
        result = split_apply(cursor, plan, now=now, link_id=link_id, actor_id=actor.id, reason=reason[:2000])
    audit_record(actor=actor, action="profile.unmerged", object_type="profile", object_id=profile_id,
                 details={"link_id": link_id, "profiles": [str(p) for p in result.profiles],
                          "events_moved": result.events_moved, "transactions_moved": result.transactions_moved,
                          "identities_moved": result.identities_moved, "reason": reason[:500]})
    return result


def identity_detach(cursor, *, identity_id: int, reason: str, now) -> SplitResult:
    """Deactivate every active link of an identity (a shared device) and split what falls apart.
    Runs inside the caller's transaction and graph lock."""
    profile_id = _lock_component_of(cursor, identity_id)
    cursor.execute("UPDATE profiles_identitylink SET is_active = false, deactivated_at = %s, deactivation_reason = %s "
                   "WHERE (identity_a_id = %s OR identity_b_id = %s) AND is_active",
                   [now, reason, identity_id, identity_id])
    if cursor.rowcount == 0:
        return SplitResult(profile_id, profiles=[profile_id])
    plan = split_plan(cursor, profile_id=profile_id)
    return split_apply(cursor, plan, now=now, reason=reason)
