"""Set-based resolution of unresolved events, one bounded batch per transaction.

A batch works on temporary tables and touches each event in Python never:
1. claims up to `limit` events with `profile_id IS NULL` into `_rb` (partial index
   `profiles_event_unresolved`, `FOR UPDATE SKIP LOCKED`: concurrent resolvers take disjoint
   batches, a duplicate task finds nothing);
2. normalises, checks against blocked values and hashes each *distinct* raw identifier in
   Python (cached across batches; extract.py) and COPYs the answers into `_rid`;
3. derives in SQL each event's keys (`_re`), the batch's nodes (`_rn`, joined to the
   identities already known) and edges (`_redge`, one row per pair and rule);
4. sends to Python only the edges that could change the graph (a node not known yet, or two
   different profiles): a union-find applies the guard rails edge by edge (shared devices and
   the user-id limit refuse edges, stored inactive and flagged) and plans merges;
5. locks every existing profile involved in ascending id order, re-checks that nothing moved
   meanwhile (else the batch is retried), and writes set-based: identities, links, merges
   (merge.py), events, transactions, new profiles and activity; identify traits are folded in
   Python for the few profiles that received them;
6. folds consent last (merges never widen it; decisions recorded on identifiers before they
   joined a profile now apply to it), holding the consent ledger lock only until commit;
7. announces the changed profiles to segments after commit (`cdp.hooks.profiles_changed`).
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
from psycopg import sql

from cdp import hooks
from consent.services.state import consent_identities_sync
from profiles.identity import devices, flags, locks, split, store
from profiles.identity.blocklist import blocklist_load
from profiles.identity.extract import Node, identifier_cache
from profiles.identity.merge import Merge, merges_apply, merges_consent_fold
from profiles.identity.traits import Provenance, observations
from profiles.identity.unionfind import UnionFind
from profiles.models import Identity, IdentityLink

logger = logging.getLogger(__name__)
Kind = Identity.Kind
Rule = IdentityLink.Rule
MAX_ATTEMPTS = 8


class Conflict(Exception):
    """Another transaction changed the profiles this batch planned from: retry it."""


@dataclass
class BatchResult:
    events: int = 0
    unattributed: int = 0
    identities_created: int = 0
    links_refused: int = 0
    profiles_created: int = 0
    merges: int = 0
    transactions: int = 0
    flags: int = 0
    attempts: int = 1
    changed_profiles: set = field(default_factory=set)
    event_names: set = field(default_factory=set)
    trait_names: set = field(default_factory=set)
    # profile -> the event names attached to it in this batch (segments evaluate each profile
    # only for the segments its own events can change); merged profiles are not in it.
    event_names_by_profile: dict = field(default_factory=dict)

    def counts(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


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
                                           trait_names=result.trait_names,
                                           event_names_by_profile=result.event_names_by_profile)
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
        hooks.resolve_started()  # before claiming: a commit that found the flag set is claimed here
        batch = identity_resolve_batch(limit=limit)
        result.batches += 1
        result.events += batch.events
        if batch.events < limit:
            return result
        if time.monotonic() >= deadline:
            result.more = True
            return result


# --- SQL of one batch (temporary tables, dropped at commit) ---------------------------------------

# Partial index profiles_event_unresolved (received_at, id) WHERE profile_id IS NULL.
_CLAIM = sql.SQL("""
CREATE TEMPORARY TABLE _rb ON COMMIT DROP AS
SELECT e.id, e.timestamp AS ts, (extract(epoch FROM e.timestamp) * 1000000)::bigint AS us, e.source_id, e.type,
       e.name, e.anonymous_id AS anon, e.user_id AS uid,
       CASE WHEN e.type = 'alias' THEN e.previous_id END AS prev,
       CASE WHEN e.type = 'identify' THEN e.traits ->> 'email' END AS email,
       CASE WHEN e.type = 'identify' THEN e.traits ->> 'phone' END AS phone,
       CASE WHEN e.type = 'track' AND e.name = ANY(%s) THEN {order_id} END AS order_id,
       e.context #>> '{{device,type}}' AS device, e.context #>> '{{os,name}}' AS os,
       e.context #>> '{{browser,name}}' AS browser, e.context ->> 'userAgent' AS ua,
       CASE WHEN e.type = 'identify' THEN e.traits END AS traits
FROM profiles_event e
WHERE e.profile_id IS NULL
ORDER BY e.received_at, e.id
LIMIT %s
FOR UPDATE SKIP LOCKED
""")
# Anonymous and user ids come with when and where each was first and last seen in the batch
# (most events carry nothing else, so nodes are built from these few rows, not per event).
# Only (kind, raw) travels to Python. "Source of the first sighting" is the minimum of
# (µs, event id, source) arrays: a hash aggregate, no sort per group.
_RAW_IDENTIFIERS = """
CREATE TEMPORARY TABLE _rraw ON COMMIT DROP AS
SELECT kind, raw, min(ts) AS first_seen, max(ts) AS last_seen, (min(ARRAY[us, id, source_id]))[3] AS source_id
FROM (
    SELECT 'anonymous_id' AS kind, anon AS raw, ts, us, id, source_id FROM _rb WHERE anon <> ''
    UNION ALL SELECT 'user_id', uid, ts, us, id, source_id FROM _rb WHERE uid <> ''
) seen GROUP BY kind, raw
UNION ALL
SELECT DISTINCT kind, raw, NULL::timestamptz, NULL::timestamptz, NULL::bigint FROM (
    SELECT 'email' AS kind, email AS raw FROM _rb WHERE email <> ''
    UNION ALL SELECT 'phone', phone FROM _rb WHERE phone <> ''
    UNION ALL SELECT 'previous', prev FROM _rb WHERE prev <> '' AND uid <> ''
) rare
"""
# _rid: one row per (kind, raw value); hash NULL when unusable or blocked. An alias's previousId
# gets two rows, read as a user id and as an anonymous id.
# An alias's previousId is a user id when we know it as one (in the graph or as another message's
# userId in this batch), else an anonymous id.
_KEYED = """
CREATE TEMPORARY TABLE _re ON COMMIT DROP AS
SELECT b.id, b.ts, b.us, b.source_id, b.type, b.name, b.order_id, b.device, b.os, b.browser, b.ua,
       a.hash AS anon_hash, u.hash AS user_hash,
       CASE WHEN b.type = 'identify' THEN m.hash END AS email_hash,
       CASE WHEN b.type = 'identify' THEN p.hash END AS phone_hash,
       CASE WHEN pa.hash IS NULL THEN NULL WHEN known.user_id THEN 'user_id' ELSE 'anonymous_id' END AS prev_kind,
       CASE WHEN pa.hash IS NULL THEN NULL WHEN known.user_id THEN pu.hash ELSE pa.hash END AS prev_hash,
       CASE WHEN u.hash IS NOT NULL THEN 'user_id' WHEN a.hash IS NOT NULL THEN 'anonymous_id' END AS pkind,
       COALESCE(u.hash, a.hash) AS phash
FROM _rb b
LEFT JOIN _rid a ON a.kind = 'anonymous_id' AND a.raw = b.anon
LEFT JOIN _rid u ON u.kind = 'user_id' AND u.raw = b.uid
LEFT JOIN _rid m ON m.kind = 'email' AND m.raw = b.email
LEFT JOIN _rid p ON p.kind = 'phone' AND p.raw = b.phone
LEFT JOIN _rid pu ON pu.kind = 'previous_user' AND pu.raw = b.prev AND u.hash IS NOT NULL
LEFT JOIN _rid pa ON pa.kind = 'previous_anon' AND pa.raw = b.prev AND u.hash IS NOT NULL
LEFT JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM profiles_identity i WHERE i.kind = 'user_id' AND i.value_hash = pu.hash)
        OR EXISTS (SELECT 1 FROM _rid other WHERE other.kind = 'user_id' AND other.hash = pu.hash) AS user_id
    WHERE pa.hash IS NOT NULL
) known ON true
"""
_NODES = """
CREATE TEMPORARY TABLE _rn ON COMMIT DROP AS
SELECT n.kind, n.hash, min(h.value) AS value, min(h.stored) AS stored, min(n.first_seen) AS first_seen,
       max(n.last_seen) AS last_seen, (array_agg(n.source_id ORDER BY n.first_seen))[1] AS source_id,
       NULL::bigint AS identity_id, NULL::uuid AS profile_id
FROM (
    SELECT i.kind, i.hash, r.first_seen, r.last_seen, r.source_id FROM _rid i
    JOIN _rraw r ON r.kind = i.kind AND r.raw = i.raw
    WHERE i.kind IN ('anonymous_id', 'user_id') AND i.hash IS NOT NULL
    UNION ALL SELECT 'email', email_hash, ts, ts, source_id FROM _re WHERE email_hash IS NOT NULL AND phash IS NOT NULL
    UNION ALL SELECT 'phone', phone_hash, ts, ts, source_id FROM _re WHERE phone_hash IS NOT NULL AND phash IS NOT NULL
    UNION ALL SELECT prev_kind, prev_hash, ts, ts, source_id FROM _re WHERE prev_hash IS NOT NULL
) n
JOIN _rhash h ON h.kind = n.kind AND h.hash = n.hash
GROUP BY n.kind, n.hash
"""
# Unique index identity_kind_value_uniq (kind, value_hash).
_NODES_KNOWN = """
UPDATE _rn SET identity_id = i.id, profile_id = i.profile_id
FROM profiles_identity i WHERE i.kind = _rn.kind AND i.value_hash = _rn.hash
"""
_EDGES = """
CREATE TEMPORARY TABLE _redge ON COMMIT DROP AS
SELECT ka, ha, kb, hb, rule, (array_agg(source_id ORDER BY ts, id))[1] AS source_id, min(ts) AS first_seen,
       max(ts) AS last_seen
FROM (
    SELECT CASE WHEN (k1, h1) <= (k2, h2) THEN k1 ELSE k2 END AS ka, CASE WHEN (k1, h1) <= (k2, h2) THEN h1 ELSE h2 END AS ha,
           CASE WHEN (k1, h1) <= (k2, h2) THEN k2 ELSE k1 END AS kb, CASE WHEN (k1, h1) <= (k2, h2) THEN h2 ELSE h1 END AS hb,
           rule, source_id, ts, id
    FROM (
        SELECT 'anonymous_id' AS k1, anon_hash AS h1, 'user_id' AS k2, user_hash AS h2, 'same_message' AS rule,
               source_id, ts, id FROM _re WHERE anon_hash IS NOT NULL AND user_hash IS NOT NULL
        UNION ALL SELECT pkind, phash, 'email', email_hash, 'identify_traits', source_id, ts, id FROM _re
               WHERE phash IS NOT NULL AND email_hash IS NOT NULL
        UNION ALL SELECT pkind, phash, 'phone', phone_hash, 'identify_traits', source_id, ts, id FROM _re
               WHERE phash IS NOT NULL AND phone_hash IS NOT NULL
        UNION ALL SELECT prev_kind, prev_hash, 'user_id', user_hash, 'alias', source_id, ts, id FROM _re
               WHERE prev_hash IS NOT NULL AND (prev_kind, prev_hash) IS DISTINCT FROM ('anonymous_id', anon_hash)
               AND (prev_kind, prev_hash) IS DISTINCT FROM ('user_id', user_hash)
    ) pairs
) ordered
GROUP BY ka, ha, kb, hb, rule
"""
# Everything but an edge whose two ends already share a profile and whose link exists: only
# those can change the graph. identitylink_uniq (identity_a_id, identity_b_id, rule).
_INTERESTING = """
SELECT e.ka, e.ha, e.kb, e.hb, e.rule, e.first_seen, na.identity_id, na.profile_id, nb.identity_id, nb.profile_id,
       l.is_active
FROM _redge e
JOIN _rn na ON na.kind = e.ka AND na.hash = e.ha
JOIN _rn nb ON nb.kind = e.kb AND nb.hash = e.hb
LEFT JOIN profiles_identitylink l ON l.identity_a_id = LEAST(na.identity_id, nb.identity_id)
     AND l.identity_b_id = GREATEST(na.identity_id, nb.identity_id) AND l.rule = e.rule
WHERE na.profile_id IS NULL OR nb.profile_id IS NULL OR na.profile_id <> nb.profile_id OR l.id IS NULL
"""
# New identities, and their ids back into _rn in the same statement.
_INSERT_IDENTITIES = """
WITH inserted AS (
    INSERT INTO profiles_identity (profile_id, kind, value_hash, value, source_id, first_seen_at, last_seen_at,
                                   origin_profile_id)
    SELECT a.profile_id, n.kind, n.hash, n.stored, n.source_id, n.first_seen, n.last_seen, a.profile_id
    FROM _rn n JOIN _rassign a ON a.kind = n.kind AND a.hash = n.hash
    WHERE n.identity_id IS NULL ORDER BY n.kind, n.hash
    ON CONFLICT (kind, value_hash) DO NOTHING RETURNING kind, value_hash, id, profile_id)
UPDATE _rn SET identity_id = inserted.id, profile_id = inserted.profile_id
FROM inserted WHERE _rn.kind = inserted.kind AND _rn.hash = inserted.value_hash
"""
_SEEN = """
UPDATE profiles_identity i SET first_seen_at = LEAST(i.first_seen_at, n.first_seen),
       last_seen_at = GREATEST(i.last_seen_at, n.last_seen)
FROM _rn n WHERE i.id = n.identity_id AND n.profile_id IS NOT NULL
  AND (n.first_seen < i.first_seen_at OR n.last_seen > i.last_seen_at)
"""
# A link keeps its state once written (traffic never switches a deactivated or refused link back
# on); a new link between identifiers staff separated is born inactive.
_LINKS = """
INSERT INTO profiles_identitylink (identity_a_id, identity_b_id, rule, source_id, first_seen_at, last_seen_at,
                                   is_active, deactivation_reason, deactivated_at)
SELECT LEAST(na.identity_id, nb.identity_id), GREATEST(na.identity_id, nb.identity_id), e.rule, e.source_id,
       e.first_seen, e.last_seen, COALESCE(d.is_active, true), COALESCE(d.reason, ''),
       CASE WHEN COALESCE(d.is_active, true) THEN NULL ELSE %s::timestamptz END
FROM _redge e
JOIN _rn na ON na.kind = e.ka AND na.hash = e.ha
JOIN _rn nb ON nb.kind = e.kb AND nb.hash = e.hb
LEFT JOIN _rdecision d ON d.ka = e.ka AND d.ha = e.ha AND d.kb = e.kb AND d.hb = e.hb AND d.rule = e.rule
ORDER BY 1, 2, 3
ON CONFLICT (identity_a_id, identity_b_id, rule) DO UPDATE SET
    first_seen_at = LEAST(profiles_identitylink.first_seen_at, excluded.first_seen_at),
    last_seen_at = GREATEST(profiles_identitylink.last_seen_at, excluded.last_seen_at)
WHERE excluded.first_seen_at < profiles_identitylink.first_seen_at
   OR excluded.last_seen_at > profiles_identitylink.last_seen_at
"""
# Every event goes to the current profile of its main identifier (userId, else anonymousId);
# _rn holds it (refreshed after identities were created and merges re-pointed them).
_FINAL = """
CREATE TEMPORARY TABLE _rfinal ON COMMIT DROP AS
SELECT r.id, r.ts, r.us, r.source_id, r.name, r.order_id, r.device, r.os, r.browser, r.ua,
       COALESCE(n.profile_id, %s::uuid) AS profile_id, n.profile_id IS NULL AS unattributed
FROM _re r LEFT JOIN _rn n ON n.kind = r.pkind AND n.hash = r.phash
"""
_ATTACH = """
UPDATE profiles_event e SET profile_id = f.profile_id FROM _rfinal f
WHERE e.id = f.id AND e.timestamp = f.ts AND e.profile_id IS NULL
"""  # primary key (id, timestamp) of each partition; the rows are locked by the claim
_ORDERS = """
UPDATE profiles_transaction t SET profile_id = f.profile_id FROM _rfinal f
WHERE f.order_id IS NOT NULL AND NOT f.unattributed AND t.source_id = f.source_id AND t.order_id = f.order_id
  AND t.profile_id IS NULL
RETURNING t.profile_id
"""  # unique index transaction_source_order_uniq (source_id, order_id)
# The newest event per profile first (max of (µs, id) arrays, a hash aggregate), then the
# (regex) device classification on that row only.
_ACTIVITY = sql.SQL("""
CREATE TEMPORARY TABLE _ract ON COMMIT DROP AS
SELECT a.profile_id, a.first_seen, f.ts AS last_seen, {device} AS device, {os} AS os, {browser} AS browser
FROM (SELECT profile_id, min(ts) AS first_seen, (max(ARRAY[us, id]))[2] AS newest
      FROM _rfinal WHERE NOT unattributed GROUP BY profile_id) a
JOIN _rfinal f ON f.id = a.newest
""")
_NEW_PROFILES = """
INSERT INTO profiles_profile (id, created_at, updated_at, first_seen_at, last_seen_at, gender, country, city, postcode,
    income_band, language, occupation, last_device_type, last_os, last_browser, traits)
SELECT p.profile_id, %s, %s, a.first_seen, a.last_seen, '', '', '', '', '', '', '', COALESCE(a.device, ''),
       COALESCE(a.os, ''), COALESCE(a.browser, ''), '{}'
FROM (SELECT DISTINCT profile_id FROM _rassign WHERE is_new) p LEFT JOIN _ract a ON a.profile_id = p.profile_id
"""
_TOUCH = """
UPDATE profiles_profile p SET
    first_seen_at = LEAST(p.first_seen_at, a.first_seen),
    last_seen_at = GREATEST(p.last_seen_at, a.last_seen),
    last_device_type = CASE WHEN p.last_seen_at IS NULL OR a.last_seen >= p.last_seen_at
                            THEN COALESCE(NULLIF(a.device, ''), p.last_device_type) ELSE p.last_device_type END,
    last_os = CASE WHEN p.last_seen_at IS NULL OR a.last_seen >= p.last_seen_at
                   THEN COALESCE(NULLIF(a.os, ''), p.last_os) ELSE p.last_os END,
    last_browser = CASE WHEN p.last_seen_at IS NULL OR a.last_seen >= p.last_seen_at
                        THEN COALESCE(NULLIF(a.browser, ''), p.last_browser) ELSE p.last_browser END,
    updated_at = %s
FROM _ract a WHERE p.id = a.profile_id AND NOT EXISTS (SELECT 1 FROM _rassign n WHERE n.is_new AND n.profile_id = a.profile_id)
"""  # SET expressions see the old row, so "newer" compares with the previous last_seen_at


class _Resolver:
    def __init__(self, cursor, limit: int):
        self.cursor = cursor
        self.limit = limit
        self.now = timezone.now()
        self.result = BatchResult()
        self.blocklist = blocklist_load()

    def run(self) -> BatchResult:
        # A batch's temporary tables (~10 MB for 50,000 events) stay in local buffers instead of
        # spilling. PostgreSQL refuses a different temp_buffers once the session has used a
        # temporary table (a worker's connection that ran a real-time drain or an import first):
        # then the batch keeps the session's buffers instead of failing.
        self.cursor.execute("SAVEPOINT resolve_temp_buffers")
        try:
            self.cursor.execute("SET temp_buffers = '128MB'")
        except psycopg.errors.InvalidParameterValue:
            self.cursor.execute("ROLLBACK TO SAVEPOINT resolve_temp_buffers")
        self.cursor.execute("RELEASE SAVEPOINT resolve_temp_buffers")
        locks.graph_lock_shared(self.cursor)
        for table in ("_rb", "_rraw", "_rid", "_rhash", "_re", "_rn", "_redge", "_rassign", "_rdecision", "_rfinal", "_ract"):
            self.cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        self.cursor.execute(_CLAIM.format(order_id=store.ORDER_ID_SQL), [list(store.ORDER_EVENT_NAMES), self.limit])
        self.result.events = self.cursor.rowcount
        if not self.result.events:
            return self.result
        self._identifiers()
        self.cursor.execute(_KEYED)
        self.cursor.execute(_NODES)
        self.cursor.execute(_NODES_KNOWN)
        self.cursor.execute(_EDGES)
        # Statistics for the tables joined to big ones, or the planner guesses one row and loops.
        self.cursor.execute("ANALYZE _rn, _redge")
        self._shared_devices()
        self._interesting_edges()
        self._lock_and_validate()
        self._plan()
        self._write()
        return self.result

    # -- 2. distinct identifiers in Python ------------------------------------------------------
    def _identifiers(self) -> None:
        self.cursor.execute(_RAW_IDENTIFIERS)
        self.cursor.execute("SELECT kind, raw FROM _rraw")
        cache = identifier_cache(self.blocklist)
        rows = []
        for kind, raw in self.cursor.fetchall():
            if kind == "previous":
                as_user, as_anonymous = cache.previous(raw)
                rows.append(("previous_user", raw, *as_user))
                rows.append(("previous_anon", raw, *as_anonymous))
            else:
                rows.append((kind, raw, *cache.get(kind, raw)))
        store.temp_copy(self.cursor, "_rid", [("kind", "text"), ("raw", "text"), ("value", "text"),
                                              ("stored", "text"), ("hash", "bytea"), ("blocked", "bigint")], rows)
        self.cursor.execute(
            "CREATE TEMPORARY TABLE _rhash ON COMMIT DROP AS SELECT DISTINCT ON (kind, hash) "
            "CASE kind WHEN 'previous_user' THEN 'user_id' WHEN 'previous_anon' THEN 'anonymous_id' ELSE kind END AS kind, "
            "hash, value, stored FROM _rid WHERE hash IS NOT NULL ORDER BY 1, hash")
        if any(row[5] is not None for row in rows):
            self._count_blocked_hits()

    def _count_blocked_hits(self) -> None:
        self.cursor.execute("""
            SELECT r.blocked, count(*) FROM _rid r JOIN (
                SELECT 'anonymous_id' AS kind, anon AS raw FROM _rb UNION ALL SELECT 'user_id', uid FROM _rb
                UNION ALL SELECT 'email', email FROM _rb UNION ALL SELECT 'phone', phone FROM _rb
                UNION ALL SELECT 'previous_anon', prev FROM _rb WHERE uid <> '') used
              ON used.kind = r.kind AND used.raw = r.raw
            WHERE r.blocked IS NOT NULL GROUP BY r.blocked""")
        for row_id, count in self.cursor.fetchall():
            self.blocklist.hits[row_id] += count
        self.blocklist.record_hits()

    # -- 3-4. what could change the graph ------------------------------------------------------------
    def _shared_devices(self) -> None:
        """Anonymous ids seen with more user ids than allowed stop linking: newly shared ones
        that exist are detached now (links off, component recomputed) before planning."""
        self.cursor.execute("""
            SELECT e.ha, e.hb FROM _redge e JOIN _rn na ON na.kind = e.ka AND na.hash = e.ha
            JOIN _rn nb ON nb.kind = e.kb AND nb.hash = e.hb
            WHERE e.rule = 'same_message' AND (na.profile_id IS NULL OR nb.profile_id IS NULL OR na.profile_id <> nb.profile_id)""")
        pairs = [(Node(Kind.ANONYMOUS_ID, bytes(a)), Node(Kind.USER_ID, bytes(b))) for a, b in self.cursor.fetchall()]
        self.shared, self.newly_shared = flags.shared_devices_detect(self.cursor, pairs)
        self.cursor.execute("SELECT identity_id FROM _rn WHERE kind = 'anonymous_id' AND hash = ANY(%s) "
                            "AND identity_id IS NOT NULL ORDER BY identity_id",
                            [[node.value_hash for node in self.newly_shared]])
        detached = [row[0] for row in self.cursor.fetchall()]
        split_profiles = [split.identity_detach(self.cursor, identity_id=identity_id, now=self.now,
                                                reason="shared device: anonymous id seen with too many user ids"
                                                ).profile_id for identity_id in detached]
        if split_profiles:  # only nodes of the profiles split can have moved
            self.cursor.execute(_NODES_KNOWN + " AND _rn.profile_id = ANY(%s)", [split_profiles])

    def _interesting_edges(self) -> None:
        self.cursor.execute(_INTERESTING)
        self.edges = []  # (node a, node b, rule, first seen, (id a, profile a), (id b, profile b), link active)
        for ka, ha, kb, hb, rule, first, ida, pa, idb, pb, active in self.cursor.fetchall():
            self.edges.append((Node(ka, bytes(ha)), Node(kb, bytes(hb)), rule, first, (ida, pa), (idb, pb), active))

    def _lock_and_validate(self) -> None:
        # Every profile this batch attaches to or merges, so no merge or un-merge can move them
        # under it. Ascending order (locks.profiles_lock) keeps concurrent resolvers deadlock-free.
        self.cursor.execute("SELECT DISTINCT profile_id FROM _rn WHERE profile_id IS NOT NULL")
        profiles = [row[0] for row in self.cursor.fetchall()]
        self.locked = locks.profiles_lock(self.cursor, profiles)
        if len(self.locked) != len(profiles) or any(row[1] is not None for row in self.locked.values()):
            raise Conflict("a profile involved was merged or deleted meanwhile")
        self.cursor.execute("SELECT EXISTS (SELECT 1 FROM _rn n JOIN profiles_identity i ON i.id = n.identity_id "
                            "WHERE i.profile_id <> n.profile_id)")
        if self.cursor.fetchone()[0]:
            raise Conflict("an identity involved moved meanwhile")
        involved = list({p for edge in self.edges for p in (edge[4][1], edge[5][1]) if p is not None})
        # Read under the locks: nobody can add a user id to these profiles until we commit.
        self.cursor.execute("SELECT profile_id, count(*) FROM profiles_identity WHERE profile_id = ANY(%s) "
                            "AND kind = %s GROUP BY profile_id", [involved, Kind.USER_ID])
        self.user_counts = dict(self.cursor.fetchall())
        pairs = [(edge[4][0], edge[5][0]) for edge in self.edges if edge[4][0] and edge[5][0]]
        self.separated = _separated_pairs(self.cursor, pairs)

    # -- 4. plan ---------------------------------------------------------------------------------------
    @staticmethod
    def _key(node: Node, known: tuple):
        return ("p", known[1]) if known[0] else ("n", node)

    def _plan(self) -> None:
        groups = UnionFind()
        for a, b, _, _, known_a, known_b, _ in self.edges:
            for node, known in ((a, known_a), (b, known_b)):
                if known[0]:
                    groups.add(("p", known[1]), profile=known[1], user_ids=self.user_counts.get(known[1], 0))
                else:
                    groups.add(("n", node), user_ids=1 if node.kind == Kind.USER_ID else 0)
        self.decisions = {}  # (a, b, rule) -> (is_active, reason) for edges written inactive
        limit = settings.CDP_IDENTITY_MAX_USER_IDS
        self.refused = []
        for a, b, rule, _, known_a, known_b, link_active in sorted(
                self.edges, key=lambda e: (e[3], e[2], e[0].value_hash, e[1].value_hash)):
            ka, kb = self._key(a, known_a), self._key(b, known_b)
            pair = tuple(sorted((known_a[0], known_b[0]))) if known_a[0] and known_b[0] else None
            reason = None
            if link_active is False:
                self.refused.append((a, b, rule, False))  # stays as it was: deactivated or refused earlier
                continue
            if link_active:
                groups.union(ka, kb, (a, b, rule))  # an active link across profiles: the graph was behind
                continue
            if a in self.shared or b in self.shared:
                reason = "shared device: this anonymous id is not used for linking"
            elif pair and pair in self.separated:
                reason = "kept apart: staff un-merged these identifiers"
            elif (rule != Rule.ALIAS and groups.find(ka) != groups.find(kb)
                  and groups.group(ka).user_ids + groups.group(kb).user_ids > limit):
                reason = f"refused: would put more than {limit} user id(s) in one profile"
                self.refused.append((a, b, rule, True))
            if reason:
                self.decisions[(a, b, rule)] = (False, reason)
            else:
                groups.union(ka, kb, (a, b, rule))
        self._assign(groups)

    def _assign(self, groups: UnionFind) -> None:
        self.merges: list[Merge] = []
        self.merge_edges = {}
        self.assign = {}  # new node -> (profile id, is a new profile)
        survivors = {}
        for root, group in groups.roots():
            if group.profiles:
                survivor = min(group.profiles, key=lambda p: locks.survivor_key(p, self.locked[p][0],
                                                                                 self.locked[p][2]))
                for absorbed in sorted(set(group.profiles) - {survivor}, key=str):
                    edge = group.merge_edges.get(absorbed)
                    self.merges.append(Merge(absorbed, survivor, None, edge[2] if edge else "", None))
                    self.merge_edges[absorbed] = edge
                survivors[root] = (survivor, False)
            else:
                survivors[root] = (uuid.uuid4(), True)
        for key in groups.parent:
            if key[0] == "n":
                self.assign[key[1]] = survivors[groups.find(key)]

    # -- 5. write ------------------------------------------------------------------------------------
    def _write(self) -> None:
        store.temp_copy(self.cursor, "_rassign", [("kind", "text"), ("hash", "bytea"), ("profile_id", "uuid"),
                                                  ("is_new", "boolean")],
                        [(n.kind, n.value_hash, p, new) for n, (p, new) in self.assign.items()])
        # Identifiers linked to nothing new start a profile each.
        self.cursor.execute("INSERT INTO _rassign SELECT n.kind, n.hash, gen_random_uuid(), true FROM _rn n "
                            "WHERE n.identity_id IS NULL AND NOT EXISTS (SELECT 1 FROM _rassign a "
                            "WHERE a.kind = n.kind AND a.hash = n.hash)")
        self.cursor.execute(_SEEN)  # existing identities only: the new ones get their ids next
        self.cursor.execute(_INSERT_IDENTITIES)
        self.result.identities_created = self.cursor.rowcount
        self.cursor.execute("SELECT EXISTS (SELECT 1 FROM _rn WHERE identity_id IS NULL)")
        if self.cursor.fetchone()[0]:
            raise Conflict("another resolver created one of these identifiers meanwhile")
        store.temp_copy(self.cursor, "_rdecision", [("ka", "text"), ("ha", "bytea"), ("kb", "text"), ("hb", "bytea"),
                                                    ("rule", "text"), ("is_active", "boolean"), ("reason", "text")],
                        [(a.kind, a.value_hash, b.kind, b.value_hash, rule, active, reason)
                         for (a, b, rule), (active, reason) in self.decisions.items()])
        self.cursor.execute(_LINKS, [self.now])
        self.result.links_refused = len(self.decisions)
        link_ids = self._link_ids([e for e in self.merge_edges.values() if e] + [r[:3] for r in self.refused])
        for merge in self.merges:
            edge = self.merge_edges.get(merge.absorbed)
            merge.link_id = link_ids.get(edge) if edge else None
        merges_apply(self.cursor, merges=self.merges, now=self.now, fold_consent=False)
        if self.merges:
            self.cursor.execute("UPDATE _rn SET profile_id = m.survivor FROM _identity_merge m "
                                "WHERE _rn.profile_id = m.absorbed")
        self.cursor.execute(_FINAL, [store.UNATTRIBUTED])
        self.cursor.execute(_ATTACH)
        self.cursor.execute("SELECT (SELECT count(*) FROM _rfinal WHERE unattributed), "
                            "ARRAY(SELECT DISTINCT name FROM _rb WHERE name <> '')")
        self.result.unattributed, names = self.cursor.fetchone()
        self.cursor.execute("SELECT profile_id, array_agg(DISTINCT name) FROM _rfinal WHERE NOT unattributed "
                            "AND name <> '' GROUP BY profile_id")
        self.result.event_names_by_profile = dict(self.cursor.fetchall())
        self.cursor.execute(_ORDERS)
        buyers = {row[0] for row in self.cursor.fetchall()}
        self.result.transactions = self.cursor.rowcount
        hooks.transactions_changed(profile_ids=buyers)  # computed traits (orders, RFM) follow
        device, params = devices.device_sql()
        self.cursor.execute(_ACTIVITY.format(**device), params)
        self.cursor.execute("SELECT array_agg(profile_id) FROM _ract")
        attached_profiles = self.cursor.fetchone()[0]
        self.cursor.execute(_NEW_PROFILES, [self.now, self.now])
        self.result.profiles_created = self.cursor.rowcount
        self.cursor.execute(_TOUCH, [self.now])
        self._traits()
        self.result.flags = self._flag(link_ids)
        self.result.merges = len(self.merges)
        self.result.event_names = set(names or [])
        self.result.changed_profiles = (set(attached_profiles or []) | {m.survivor for m in self.merges}
                                        | {m.absorbed for m in self.merges})
        for merge in self.merges:  # a merge may change anything: the batch's names, as before
            self.result.event_names_by_profile.pop(merge.survivor, None)
            self.result.event_names_by_profile.pop(merge.absorbed, None)
        self._consent()

    def _consent(self) -> None:
        """Fold consent into the profiles that gained identifiers or absorbed others. Deferred
        foreign-key checks run first, so the ledger lock (serialising every consent append) is
        held only for the fold and the commit (re-deferred at once: the batch may be nested in
        a larger transaction)."""
        self.cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        self.cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        if self.merges:
            merges_consent_fold(merges=self.merges)
        self.cursor.execute("SELECT array_agg(DISTINCT profile_id) FROM _rassign")
        gained = set(self.cursor.fetchone()[0] or []) - {m.absorbed for m in self.merges}
        consent_identities_sync(profile_ids=gained | {m.survivor for m in self.merges})

    def _link_ids(self, edges) -> dict:
        if not edges:
            return {}
        self.cursor.execute(
            "SELECT e.ka, e.ha, e.kb, e.hb, e.rule, l.id FROM unnest(%s::text[], %s::bytea[], %s::text[], %s::bytea[], "
            "%s::text[]) AS e(ka, ha, kb, hb, rule) JOIN _rn na ON na.kind = e.ka AND na.hash = e.ha "
            "JOIN _rn nb ON nb.kind = e.kb AND nb.hash = e.hb JOIN profiles_identitylink l "
            "ON l.identity_a_id = LEAST(na.identity_id, nb.identity_id) "
            "AND l.identity_b_id = GREATEST(na.identity_id, nb.identity_id) AND l.rule = e.rule",
            [[a.kind for a, _, _ in edges], [a.value_hash for a, _, _ in edges], [b.kind for _, b, _ in edges],
             [b.value_hash for _, b, _ in edges], [rule for _, _, rule in edges]])
        return {(Node(ka, bytes(ha)), Node(kb, bytes(hb)), rule): link_id
                for ka, ha, kb, hb, rule, link_id in self.cursor.fetchall()}

    def _traits(self) -> None:
        """Fold merges and identify traits into the profiles concerned (a few per batch)."""
        self.cursor.execute("SELECT f.profile_id, f.ts, f.id, f.source_id, b.traits FROM _rfinal f "
                            "JOIN _rb b ON b.id = f.id WHERE b.type = 'identify' AND NOT f.unattributed")
        identify = defaultdict(list)
        for profile_id, ts, event_id, source_id, traits in self.cursor.fetchall():
            traits = store.json_value(traits)
            if isinstance(traits, dict) and traits:
                identify[profile_id].append((ts, event_id, source_id, traits))
        survivors = {m.survivor for m in self.merges}
        targets = survivors | set(identify)
        if not targets:
            return
        states = store.states_load(self.cursor, targets | {m.absorbed for m in self.merges})
        snapshots = []
        for merge in self.merges:
            snapshots.append(store.encrypt_snapshot(states[merge.survivor].to_snapshot()))
            states[merge.survivor].absorb(states[merge.absorbed])
        if self.merges:
            # The merge log rows merges_apply wrote a moment ago get the survivor's state before.
            self.cursor.execute(
                "UPDATE profiles_profilemerge m SET state_before = s.snapshot FROM unnest(%s::uuid[], %s::text[]) "
                "AS s(absorbed, snapshot) WHERE m.kind = 'merge' AND m.other_profile_id = s.absorbed "
                "AND m.created_at = %s AND m.state_before IS NULL",
                [[m.absorbed for m in self.merges], snapshots, self.now])
        authority = store.sources_authority(self.cursor)
        for profile_id, messages in identify.items():
            state = states[profile_id]
            for ts, _, source_id, traits in sorted(messages, key=lambda m: (m[0], m[1])):
                provenance = Provenance(ts, source_id, authority.get(source_id, False))
                for name, value in observations(traits).items():
                    state.offer(name, value, provenance)
        store.states_write(self.cursor, [states[p] for p in targets], now=self.now)
        for profile_id in targets:
            self.result.trait_names |= states[profile_id].trait_names()

    def _flag(self, link_ids: dict) -> int:
        refused = [(link_ids[(a, b, rule)], now) for a, b, rule, now in self.refused if (a, b, rule) in link_ids]
        count = flags.refused_links_flag(self.cursor, refused, now=self.now)
        if self.newly_shared:
            self.cursor.execute("SELECT hash, identity_id FROM _rn WHERE kind = 'anonymous_id' AND hash = ANY(%s)",
                                [[n.value_hash for n in self.newly_shared]])
            ids = {Node(Kind.ANONYMOUS_ID, bytes(h)): identity_id for h, identity_id in self.cursor.fetchall()}
            count += flags.shared_devices_flag(self.cursor, {ids[n]: c for n, c in self.newly_shared.items()
                                                             if n in ids}, now=self.now)
        return count


def _separated_pairs(cursor, pairs) -> set:
    """Identity pairs an un-merge by staff separated (any of their links deactivated by a user)."""
    pairs = sorted({tuple(sorted(p)) for p in pairs})
    if not pairs:
        return set()
    # Unique index identitylink_uniq leads with (identity_a_id, identity_b_id).
    cursor.execute("SELECT DISTINCT l.identity_a_id, l.identity_b_id FROM profiles_identitylink l "
                   "JOIN unnest(%s::bigint[], %s::bigint[]) AS p(a, b) ON l.identity_a_id = p.a AND l.identity_b_id = p.b "
                   "WHERE NOT l.is_active AND l.deactivated_by_id IS NOT NULL",
                   [[a for a, _ in pairs], [b for _, b in pairs]])
    return set(cursor.fetchall())


def events_unattributed_count() -> int:
    """Events kept but attributed to nobody (all their identifiers were blocked)."""
    with connection.cursor() as cursor:  # index profiles_event_profile_name_ts
        cursor.execute("SELECT count(*) FROM profiles_event WHERE profile_id = %s", [store.UNATTRIBUTED])
        return cursor.fetchone()[0]


@transaction.atomic
def events_unattributed_requeue() -> int:
    """Send events attributed to nobody back to resolution (after a blocked value was switched
    off, say); returns how many. The resolver is notified after commit."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE profiles_event SET profile_id = NULL WHERE profile_id = %s", [store.UNATTRIBUTED])
        count = cursor.rowcount
    if count:
        hooks.events_ingested(source_id=0, count=count)
    logger.info("unattributed events sent back to resolution", extra={"events": count})
    return count
