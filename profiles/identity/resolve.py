"""Set-based resolution of unresolved events, one bounded batch per transaction.

A batch:
1. claims up to `limit` events with `profile_id IS NULL` (partial index
   `profiles_event_unresolved`), `FOR UPDATE SKIP LOCKED`, so concurrent resolvers take
   disjoint batches and a duplicate task finds nothing to do;
2. extracts identifiers and edges per message (extract.py) and reads the identities it
   already knows;
3. locks the profiles involved in ascending id order, re-reads, and retries the batch if a
   concurrent merge or un-merge moved anything meanwhile;
4. plans in memory with a union-find that applies the guard rails edge by edge (blocked values
   are already gone; shared devices and the user-id limit refuse edges, which are stored
   inactive and flagged);
5. writes set-based: new profiles and identities (COPY), links (INSERT … ON CONFLICT), merges
   (merge.py), events, transactions, traits, first/last seen and device;
6. announces the changed profiles to segments after commit (`cdp.hooks.profiles_changed`).
"""

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import psycopg.errors
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from cdp import hooks
from profiles.identifiers import stored_value
from profiles.identity import flags, locks, split, store
from profiles.identity.blocklist import blocklist_load
from profiles.identity.devices import device_fields
from profiles.identity.extract import Extractor, Node
from profiles.identity.merge import Merge, merges_apply
from profiles.identity.traits import ProfileState, Provenance, observations
from profiles.identity.unionfind import UnionFind
from profiles.models import Identity, IdentityLink

logger = logging.getLogger(__name__)
Kind = Identity.Kind
Rule = IdentityLink.Rule
MAX_ATTEMPTS = 8

# Needs the partial index profiles_event_unresolved (received_at, id) WHERE profile_id IS NULL.
CLAIM = """
SELECT e.id, e.timestamp, e.source_id, e.type, e.name, e.anonymous_id, e.user_id, e.previous_id,
       CASE WHEN e.type = 'identify' THEN e.traits END,
       e.context #>> '{device,type}', e.context #>> '{os,name}', e.context #>> '{browser,name}',
       e.context ->> 'userAgent',
       CASE WHEN e.type = 'track' AND e.name = ANY(%s) THEN e.properties ->> 'order_id' END
FROM profiles_event e
WHERE e.profile_id IS NULL
ORDER BY e.received_at, e.id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""


class Conflict(Exception):
    """Another transaction changed the profiles this batch planned from: retry it."""


@dataclass
class BatchResult:
    events: int = 0
    unattributed: int = 0
    identities_created: int = 0
    links_created: int = 0
    links_refused: int = 0
    profiles_created: int = 0
    merges: int = 0
    transactions: int = 0
    flags: int = 0
    attempts: int = 1
    changed_profiles: set = field(default_factory=set)
    event_names: set = field(default_factory=set)
    trait_names: set = field(default_factory=set)

    def counts(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


@dataclass
class _Message:
    event_id: int
    timestamp: object
    source_id: int | None
    primary: Node | None
    device: tuple
    order_id: str | None
    traits: dict | None


def is_retryable(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, OperationalError) else exc
    return isinstance(exc, Conflict) or isinstance(cause, psycopg.errors.DeadlockDetected
                                                   | psycopg.errors.SerializationFailure)


def identity_resolve_batch(*, limit: int | None = None) -> BatchResult:
    """Resolve one batch of unresolved events (retrying on concurrent changes); see module doc."""
    limit = limit or settings.CDP_IDENTITY_BATCH_SIZE
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                result = _Resolver(cursor.cursor, limit).run()
                result.attempts = attempt
                if result.changed_profiles:
                    hooks.profiles_changed(profile_ids=result.changed_profiles, event_names=result.event_names,
                                           trait_names=result.trait_names)
            if result.events:
                logger.info("identity batch resolved", extra=result.counts())
            return result
        except Exception as exc:
            if not is_retryable(exc) or attempt == MAX_ATTEMPTS:
                raise
            logger.info("identity batch retried after a concurrent change",
                        extra={"attempt": attempt, "reason": type(exc).__name__})
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


@dataclass
class PendingResult:
    batches: int = 0
    events: int = 0
    more: bool = False


def identity_resolve_pending(*, max_seconds: float | None = None, limit: int | None = None) -> PendingResult:
    """Resolve batches until nothing is pending or `max_seconds` pass; `more` says work remains."""
    limit = limit or settings.CDP_IDENTITY_BATCH_SIZE
    deadline = time.monotonic() + (max_seconds if max_seconds is not None else settings.CDP_IDENTITY_TASK_SECONDS)
    result = PendingResult()
    while True:
        batch = identity_resolve_batch(limit=limit)
        result.batches += 1
        result.events += batch.events
        if batch.events < limit:
            return result
        if time.monotonic() >= deadline:
            result.more = True
            return result


class _Resolver:
    def __init__(self, cursor, limit: int):
        self.cursor = cursor
        self.limit = limit
        self.now = timezone.now()
        self.result = BatchResult()
        self.blocklist = blocklist_load()
        self.extractor = Extractor(self.blocklist)
        self.nodes: dict[Node, list] = {}  # node -> [value, source_id, first_seen, last_seen]
        self.edges: dict[tuple, list] = {}  # (node, node, rule) -> [source_id, first_seen, last_seen]
        self.messages: list[_Message] = []
        self.aliases: list[tuple] = []  # (user node, previous value, timestamp, source_id)

    # -- 1-2. claim and extract -----------------------------------------------------------------
    def run(self) -> BatchResult:
        locks.graph_lock_shared(self.cursor)
        self.cursor.execute(CLAIM, [list(store.ORDER_EVENT_NAMES), self.limit])
        rows = self.cursor.fetchall()
        self.result.events = len(rows)
        if not rows:
            return self.result
        for row in rows:
            self._extract(row)
        self._resolve_aliases()
        self.shared, self.newly_shared = flags.shared_devices_detect(self.cursor, self._same_message_pairs())
        self._detach_shared_devices()
        self._read_identities()
        self._lock_and_validate()
        self._plan()
        self._write()
        self.blocklist.record_hits()
        return self.result

    def _see(self, node: Node, value: str, timestamp, source_id) -> None:
        seen = self.nodes.get(node)
        if seen is None:
            self.nodes[node] = [value, source_id, timestamp, timestamp]
        else:
            seen[2], seen[3] = min(seen[2], timestamp), max(seen[3], timestamp)

    def _edge(self, a: Node, b: Node, rule: str, timestamp, source_id) -> None:
        if a == b:
            return
        key = (a, b, rule) if (a.kind, a.value_hash) <= (b.kind, b.value_hash) else (b, a, rule)
        seen = self.edges.get(key)
        if seen is None:
            self.edges[key] = [source_id, timestamp, timestamp]
        else:
            seen[1], seen[2] = min(seen[1], timestamp), max(seen[2], timestamp)

    def _extract(self, row) -> None:
        (event_id, timestamp, source_id, type_, name, anonymous_id, user_id, previous_id, traits, device_type,
         os_name, browser, user_agent, order_id) = row
        traits = store.json_value(traits)
        traits = traits if isinstance(traits, dict) else None
        found = self.extractor.message(type=type_, user_id=user_id, anonymous_id=anonymous_id,
                                       previous_id=previous_id, email=traits.get("email") if traits else None,
                                       phone=traits.get("phone") if traits else None)
        for node, value in found.nodes.items():
            self._see(node, value, timestamp, source_id)
        for a, b, rule in found.edges:
            self._edge(a, b, rule, timestamp, source_id)
        if found.previous:
            self.aliases.append((found.primary, found.previous, timestamp, source_id))
        if name:
            self.result.event_names.add(name)
        self.messages.append(_Message(event_id, timestamp, source_id, found.primary,
                                      (device_type, os_name, browser, user_agent), order_id,
                                      traits if type_ == "identify" and found.primary else None))

    def _resolve_aliases(self) -> None:
        """previousId is a user id when we know it as one (in the graph or this batch), else an
        anonymous id."""
        if not self.aliases:
            return
        readings = {value: self.extractor.previous_nodes(value) for _, value, _, _ in self.aliases}
        as_user = [user for user, _ in readings.values()]
        known = {node for node in as_user if node in self.nodes} | self._existing(as_user)
        for user, value, timestamp, source_id in self.aliases:
            previous = readings[value][0] if readings[value][0] in known else readings[value][1]
            self._see(previous, value, timestamp, source_id)
            self._edge(previous, user, Rule.ALIAS, timestamp, source_id)

    def _existing(self, nodes) -> set:
        nodes = list(nodes)
        if not nodes:
            return set()
        # Unique index identity_kind_value_uniq (kind, value_hash).
        self.cursor.execute("SELECT i.kind, i.value_hash FROM profiles_identity i JOIN unnest(%s::text[], %s::bytea[]) "
                            "AS t(kind, value_hash) USING (kind, value_hash)",
                            [[n.kind for n in nodes], [n.value_hash for n in nodes]])
        return {Node(kind, bytes(value_hash)) for kind, value_hash in self.cursor.fetchall()}

    def _detach_shared_devices(self) -> None:
        """An anonymous id that just became a shared device stops linking: its links go inactive
        and its component is recomputed before this batch plans on it."""
        if not self.newly_shared:
            return
        known = self._existing(self.newly_shared)
        self.cursor.execute("SELECT id FROM profiles_identity i JOIN unnest(%s::bytea[]) AS t(h) "
                            "ON i.kind = 'anonymous_id' AND i.value_hash = t.h ORDER BY id",
                            [[n.value_hash for n in known]])
        for (identity_id,) in self.cursor.fetchall():
            split.identity_detach(self.cursor, identity_id=identity_id, now=self.now,
                                  reason="shared device: anonymous id seen with too many user ids")

    def _same_message_pairs(self) -> list[tuple[Node, Node]]:
        return [(a, b) for (a, b, rule) in self.edges if rule == Rule.SAME_MESSAGE]

    # -- 2-3. read, lock, validate ------------------------------------------------------------------
    def _read_identities(self) -> None:
        nodes = list(self.nodes)
        self.cursor.execute(
            "SELECT i.kind, i.value_hash, i.id, i.profile_id FROM profiles_identity i "
            "JOIN unnest(%s::text[], %s::bytea[]) AS t(kind, value_hash) USING (kind, value_hash)",
            [[n.kind for n in nodes], [n.value_hash for n in nodes]])
        self.existing = {Node(kind, bytes(h)): (identity_id, profile_id)
                         for kind, h, identity_id, profile_id in self.cursor.fetchall()}

    def _lock_and_validate(self) -> None:
        profiles = {profile_id for _, profile_id in self.existing.values()}
        self.locked = locks.profiles_lock(self.cursor, profiles)
        if any(row[1] is not None for row in self.locked.values()) or len(self.locked) != len(profiles):
            raise Conflict("a profile involved was merged or deleted meanwhile")
        ids = [identity_id for identity_id, _ in self.existing.values()]
        self.cursor.execute("SELECT id, profile_id FROM profiles_identity WHERE id = ANY(%s)", [ids])
        now_at = dict(self.cursor.fetchall())
        if any(now_at.get(identity_id) != profile_id for identity_id, profile_id in self.existing.values()):
            raise Conflict("an identity involved moved meanwhile")
        # Read under the locks: nobody can add a user id to these profiles until we commit.
        self.cursor.execute("SELECT profile_id, count(*) FROM profiles_identity WHERE profile_id = ANY(%s) "
                            "AND kind = %s GROUP BY profile_id", [list(profiles), Kind.USER_ID])
        self.user_counts = dict(self.cursor.fetchall())
        pairs = [(self.existing[a][0], self.existing[b][0]) for a, b, _ in self.edges
                 if a in self.existing and b in self.existing]
        self.links, self.separated = _links_between(self.cursor, pairs)

    # -- 4. plan -------------------------------------------------------------------------------------
    def _key(self, node: Node):
        known = self.existing.get(node)
        return ("p", known[1]) if known else ("n", node)

    def _plan(self) -> None:
        groups = UnionFind()
        for node in self.nodes:
            known = self.existing.get(node)
            if known:
                groups.add(("p", known[1]), profile=known[1], user_ids=self.user_counts.get(known[1], 0))
            else:
                groups.add(("n", node), user_ids=1 if node.kind == Kind.USER_ID else 0)
        self.decisions = {}  # edge key -> (is_active, reason)
        limit = settings.CDP_IDENTITY_MAX_USER_IDS
        for edge in sorted(self.edges, key=lambda e: (self.edges[e][1], e[2], e[0].value_hash, e[1].value_hash)):
            a, b, rule = edge
            ids = (self.existing.get(a, (None,))[0], self.existing.get(b, (None,))[0])
            pair = tuple(sorted(ids)) if None not in ids else None
            link = self.links.get((*pair, rule)) if pair else None
            ka, kb = self._key(a), self._key(b)
            if link is not None and not link:
                self.decisions[edge] = (False, "")  # stays as it was: deactivated or refused earlier
            elif a in self.shared or b in self.shared:
                self.decisions[edge] = (False, "shared device: this anonymous id is not used for linking")
            elif pair and pair in self.separated:
                self.decisions[edge] = (False, "kept apart: staff un-merged these identifiers")
            elif (rule != Rule.ALIAS and groups.find(ka) != groups.find(kb)
                  and groups.group(ka).user_ids + groups.group(kb).user_ids > limit):
                self.decisions[edge] = (False, f"refused: would put more than {limit} user id(s) in one profile")
            else:
                groups.union(ka, kb, edge)
                self.decisions[edge] = (True, "")
        self._assign(groups)

    def _assign(self, groups: UnionFind) -> None:
        self.survivor_of_root = {}
        self.merges: list[Merge] = []
        self.merge_edges = {}
        self.new_profiles = set()
        for root, group in groups.roots():
            if group.profiles:
                survivor = min(group.profiles, key=lambda p: locks.survivor_key(p, self.locked[p][0],
                                                                                 self.locked[p][2]))
                for absorbed in sorted(set(group.profiles) - {survivor}, key=str):
                    edge = group.merge_edges.get(absorbed)
                    self.merges.append(Merge(absorbed, survivor, None, edge[2] if edge else "", None))
                    self.merge_edges[absorbed] = edge
            else:
                survivor = uuid.uuid4()
                self.new_profiles.add(survivor)
            self.survivor_of_root[root] = survivor
        self.profile_of = {node: self.survivor_of_root[groups.find(self._key(node))] for node in self.nodes}

    # -- 5. write ------------------------------------------------------------------------------------
    def _write(self) -> None:
        targets = {m.primary for m in self.messages if m.primary is not None}
        identify = defaultdict(list)
        for message in self.messages:
            if message.traits:
                identify[self.profile_of[message.primary]].append(message)
        survivors = {m.survivor for m in self.merges}
        states = store.states_load(self.cursor, survivors | {m.absorbed for m in self.merges}
                                   | (set(identify) - self.new_profiles))
        for profile_id in self.new_profiles:
            states[profile_id] = ProfileState(profile_id)
        self._fold(states, identify)
        store.states_write(self.cursor, [states[p] for p in self.new_profiles], now=self.now, insert=True)
        self._write_identities()
        link_ids = self._write_links()
        for merge in self.merges:
            edge = self.merge_edges.get(merge.absorbed)
            merge.link_id = link_ids.get(edge) if edge else None
        counts = merges_apply(self.cursor, merges=self.merges, now=self.now)
        store.states_write(self.cursor, [states[p] for p in (survivors | set(identify)) - self.new_profiles],
                           now=self.now)
        self._attach_events()
        self._attach_transactions()
        store.profiles_touch(self.cursor, self._activity(), now=self.now)
        self.result.flags = flags.refused_links_flag(self.cursor, self._refused(link_ids), now=self.now)
        self.result.flags += flags.shared_devices_flag(
            self.cursor, {self.existing[n][0]: count for n, count in self.newly_shared.items()}, now=self.now)
        self.result.merges = len(self.merges)
        self.result.profiles_created = len(self.new_profiles)
        self.result.changed_profiles = ({self.profile_of[n] for n in targets} | survivors | self.new_profiles
                                        | {m.absorbed for m in self.merges})
        for state in states.values():
            self.result.trait_names |= state.trait_names()
        logger.debug("merged", extra={"moved": sum(sum(c) for c in counts.values())})

    def _fold(self, states: dict, identify: dict) -> None:
        authority = store.sources_authority(self.cursor)
        for merge in self.merges:
            survivor = states[merge.survivor]
            merge.snapshot = survivor.to_snapshot()
            survivor.absorb(states[merge.absorbed])
        for profile_id, messages in identify.items():
            state = states[profile_id]
            for message in sorted(messages, key=lambda m: (m.timestamp, m.event_id)):
                provenance = Provenance(message.timestamp, message.source_id, authority.get(message.source_id, False))
                for name, value in observations(message.traits).items():
                    state.offer(name, value, provenance)

    def _write_identities(self) -> None:
        new = sorted((n for n in self.nodes if n not in self.existing), key=lambda n: (n.kind, n.value_hash))
        if new:
            rows = [(self.profile_of[n], n.kind, n.value_hash, stored_value(n.kind, self.nodes[n][0]),
                     self.nodes[n][1], self.nodes[n][2], self.nodes[n][3], self.profile_of[n]) for n in new]
            store.temp_copy(self.cursor, "_identity_new", [
                ("profile_id", "uuid"), ("kind", "text"), ("value_hash", "bytea"), ("value", "text"),
                ("source_id", "bigint"), ("first_seen_at", "timestamptz"), ("last_seen_at", "timestamptz"),
                ("origin_profile_id", "uuid")], rows)
            self.cursor.execute(
                "INSERT INTO profiles_identity (profile_id, kind, value_hash, value, source_id, first_seen_at, "
                "last_seen_at, origin_profile_id) SELECT * FROM _identity_new ORDER BY kind, value_hash "
                "ON CONFLICT (kind, value_hash) DO NOTHING RETURNING kind, value_hash, id, profile_id")
            created = {Node(kind, bytes(h)): (identity_id, profile_id)
                       for kind, h, identity_id, profile_id in self.cursor.fetchall()}
            if len(created) != len(new):
                raise Conflict("another resolver created one of these identifiers meanwhile")
            self.existing.update(created)
            self.result.identities_created = len(created)
        known = [(self.existing[n][0], self.nodes[n][2], self.nodes[n][3]) for n in self.nodes if n not in new]
        if known:
            store.temp_copy(self.cursor, "_identity_seen", [("id", "bigint"), ("first_seen_at", "timestamptz"),
                                                            ("last_seen_at", "timestamptz")], known)
            self.cursor.execute(
                "UPDATE profiles_identity i SET first_seen_at = LEAST(i.first_seen_at, s.first_seen_at), "
                "last_seen_at = GREATEST(i.last_seen_at, s.last_seen_at) FROM _identity_seen s "
                "WHERE i.id = s.id AND (s.first_seen_at < i.first_seen_at OR s.last_seen_at > i.last_seen_at)")

    def _write_links(self) -> dict:
        rows = []
        for edge, (source_id, first, last) in self.edges.items():
            a, b, rule = edge
            low, high = sorted((self.existing[a][0], self.existing[b][0]))
            active, reason = self.decisions[edge]
            rows.append((low, high, rule, source_id, first, last, active, reason))
        rows.sort()
        store.temp_copy(self.cursor, "_identity_links", [
            ("a", "bigint"), ("b", "bigint"), ("rule", "text"), ("source_id", "bigint"),
            ("first_seen_at", "timestamptz"), ("last_seen_at", "timestamptz"), ("is_active", "boolean"),
            ("reason", "text")], rows)
        # Unique index identitylink_uniq (identity_a_id, identity_b_id, rule). An existing link
        # keeps its state (a deactivated or refused link is never switched back on by traffic).
        self.cursor.execute(
            "INSERT INTO profiles_identitylink (identity_a_id, identity_b_id, rule, source_id, first_seen_at, "
            "last_seen_at, is_active, deactivation_reason, deactivated_at) "
            "SELECT a, b, rule, source_id, first_seen_at, last_seen_at, is_active, reason, "
            "CASE WHEN is_active THEN NULL ELSE %s::timestamptz END FROM _identity_links ORDER BY a, b, rule "
            "ON CONFLICT (identity_a_id, identity_b_id, rule) DO UPDATE SET "
            "first_seen_at = LEAST(profiles_identitylink.first_seen_at, excluded.first_seen_at), "
            "last_seen_at = GREATEST(profiles_identitylink.last_seen_at, excluded.last_seen_at) "
            "RETURNING id, identity_a_id, identity_b_id, rule, (xmax = 0)", [self.now])
        by_ids = {}
        for link_id, a, b, rule, inserted in self.cursor.fetchall():
            by_ids[(a, b, rule)] = link_id
            self.result.links_created += bool(inserted)
        result = {}
        for edge in self.edges:
            a, b, rule = edge
            low, high = sorted((self.existing[a][0], self.existing[b][0]))
            result[edge] = by_ids[(low, high, rule)]
        self.result.links_refused = sum(1 for active, reason in self.decisions.values() if not active and reason)
        return result

    def _refused(self, link_ids: dict) -> list[tuple]:
        """(link id, identity a, identity b, first, last, kind) of refused or still-inactive edges."""
        refused = []
        for edge, (active, reason) in self.decisions.items():
            if active:
                continue
            a, b, _ = edge
            _, first, last = self.edges[edge]
            kind = "shared_device" if reason.startswith("shared device") else "user_id_limit"
            if reason.startswith("kept apart"):
                continue
            refused.append((link_ids[edge], self.existing[a][0], self.existing[b][0], first, last, kind, bool(reason)))
        return refused

    def _attach_events(self) -> None:
        rows = []
        for message in self.messages:
            profile_id = self.profile_of[message.primary] if message.primary else store.UNATTRIBUTED
            self.result.unattributed += message.primary is None
            rows.append((message.event_id, message.timestamp, profile_id))
        store.temp_copy(self.cursor, "_identity_attach", [("id", "bigint"), ("timestamp", "timestamptz"),
                                                          ("profile_id", "uuid")], rows)
        # Primary key (id, timestamp) of each partition; the rows are locked by the claim.
        self.cursor.execute("UPDATE profiles_event e SET profile_id = a.profile_id FROM _identity_attach a "
                            "WHERE e.id = a.id AND e.timestamp = a.timestamp AND e.profile_id IS NULL")

    def _attach_transactions(self) -> None:
        rows = [(m.source_id, m.order_id, self.profile_of[m.primary]) for m in self.messages
                if m.order_id and m.primary is not None and m.source_id is not None]
        if not rows:
            return
        store.temp_copy(self.cursor, "_identity_orders", [("source_id", "bigint"), ("order_id", "text"),
                                                          ("profile_id", "uuid")], rows)
        # Unique index transaction_source_order_uniq (source_id, order_id).
        self.cursor.execute("UPDATE profiles_transaction t SET profile_id = o.profile_id FROM _identity_orders o "
                            "WHERE t.source_id = o.source_id AND t.order_id = o.order_id AND t.profile_id IS NULL")
        self.result.transactions = self.cursor.rowcount

    def _activity(self):
        per_profile = {}
        for message in self.messages:
            if message.primary is None:
                continue
            profile_id = self.profile_of[message.primary]
            current = per_profile.get(profile_id)
            if current is None:
                per_profile[profile_id] = [message.timestamp, message.timestamp, message]
            else:
                current[0] = min(current[0], message.timestamp)
                if message.timestamp >= current[1]:
                    current[1], current[2] = message.timestamp, message
        for profile_id, (first, last, newest) in per_profile.items():
            yield (profile_id, first, last, *device_fields(*newest.device))


def _links_between(cursor, pairs) -> tuple[dict, set]:
    """Existing links between these identity pairs: {(a, b, rule): is_active} and the pairs
    staff separated (an un-merge deactivated a link between them)."""
    pairs = sorted({tuple(sorted(p)) for p in pairs})
    if not pairs:
        return {}, set()
    # Unique index identitylink_uniq leads with (identity_a_id, identity_b_id).
    cursor.execute("SELECT l.identity_a_id, l.identity_b_id, l.rule, l.is_active, l.deactivated_by_id IS NOT NULL "
                   "FROM profiles_identitylink l JOIN unnest(%s::bigint[], %s::bigint[]) AS p(a, b) "
                   "ON l.identity_a_id = p.a AND l.identity_b_id = p.b",
                   [[a for a, _ in pairs], [b for _, b in pairs]])
    links, separated = {}, set()
    for a, b, rule, active, by_staff in cursor.fetchall():
        links[(a, b, rule)] = active
        if by_staff and not active:
            separated.add((a, b))
    return links, separated

