"""Full rebuild: recompute every component from the active links and repair what disagrees.

The resolver and the un-merge keep components right incrementally; the rebuild is the safety
net (beat, nightly; `manage.py identity_rebuild`). Under the exclusive graph lock it:
1. reads (identity id, profile id) and the active links into NumPy as a few fixed-width bytea
   aggregates, over two connections sharing one snapshot;
2. builds a CSR matrix and runs `scipy.sparse.csgraph.connected_components` (never iterative
   SQL: measured ~330x slower on this data, see PERF-NOTES);
3. compares components with profiles, vectorised: a component holding identities of several
   profiles was a missed merge, a profile spread over several components a missed split;
4. repairs only those: splits through split.py (the same rules as an un-merge), then merges
   through merge.py, both set-based with COPY into temporary tables.
"""

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import psycopg
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from cdp import hooks
from profiles.identity import locks, split, store
from profiles.identity.merge import Merge, merges_apply
from profiles.models import IdentityRebuild

logger = logging.getLogger(__name__)

# Rows go out as a few big bytea values (one aggregate per range of heap blocks), not one COPY
# message per row: 2.5 M rows as CopyData messages cost ~3 s of protocol handling alone. Each row
# is one fixed-width record (id, then the profile uuid's 16 bytes; or the two ends of a link), so
# the columns cannot come apart. Ranges of ctid are TID range scans: each reader scans only its
# own blocks (an id range would make every reader scan the whole heap).
_IDENTITIES = sql.SQL("SELECT string_agg(int8send(id) || uuid_send(profile_id), ''::bytea) FROM profiles_identity "
                      "WHERE ctid >= %s::tid AND ctid < %s::tid")
_LINKS = sql.SQL("SELECT string_agg(int8send(identity_a_id) || int8send(identity_b_id), ''::bytea) "
                 "FROM profiles_identitylink WHERE is_active AND ctid >= %s::tid AND ctid < %s::tid")
_IDENTITY_RECORD = np.dtype([("id", ">i8"), ("profile", "<u8", (2,))])
_LINK_RECORD = np.dtype([("a", ">i8"), ("b", ">i8")])
BLOCKS = 60_000  # heap blocks (8 kB) per statement: values stay far below PostgreSQL's 1 GB limit
READERS = 2  # connections reading at once (the machine's cores; PostgreSQL scans one per backend)
_LAST_BLOCK = 2**32 - 1  # the last range is open-ended: blocks a row was added to since still count


@dataclass
class GraphArrays:
    identity_ids: np.ndarray  # int64
    profiles: np.ndarray  # (n, 2) uint64: the profile uuid's 16 bytes
    link_a: np.ndarray  # int64 identity ids
    link_b: np.ndarray
    readers: int = 1  # connections that read them


@dataclass
class Repair:
    components: int
    merge_components: list  # lists of identity ids, one per component holding several profiles
    split_profiles: list  # profile ids (uuid bytes) spread over several components
    profiles_to_absorb: int = 0  # before splits: sum over mixed components of (profiles - 1)


def _ranges(cursor, table: str, parts: int) -> list[tuple[str, str]]:
    """[low, high) ctid ranges covering `table`: `parts` shares, cut into at most BLOCKS blocks."""
    cursor.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", [table])
    blocks = cursor.fetchone()[0]
    step = max(1, min(BLOCKS, -(-blocks // parts)))
    starts = list(range(0, max(blocks, 1), step))
    ends = [*starts[1:], _LAST_BLOCK]
    return [(f"({start},0)", f"({end},0)") for start, end in zip(starts, ends, strict=True)]


def _read(cursor, statement: sql.Composable, ranges) -> list[bytes]:
    found = []
    for low, high in ranges:
        cursor.execute(statement, [low, high], binary=True)  # a server-binding cursor: bytes as they are
        value = cursor.fetchone()[0]
        if value is not None:
            found.append(bytes(value))
    return found


def _reader(snapshot: str, work: list, out: list, index: int) -> None:
    """One helper connection reading its share in the caller's exported snapshot."""
    params = connection.get_connection_params()
    helper = connection.get_new_connection(params)
    try:
        helper.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        helper.autocommit = False
        with psycopg.Cursor(helper) as cursor:
            # First statement of its transaction; SET takes no parameters, so a quoted literal.
            cursor.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            out[index] = [(kind, _read(cursor, statement, ranges)) for kind, statement, ranges in work]
        helper.rollback()
    except Exception as exc:  # surfaced in the caller's thread
        out[index] = exc
    finally:
        helper.close()


def graph_copy_out(cursor) -> GraphArrays:
    """Identities (id, profile) and active links as arrays, without a per-row Python step.

    When this transaction has written nothing yet (the nightly run), READERS connections read a
    share each in parallel, all in this transaction's snapshot (pg_export_snapshot): the same
    rows one connection would see. Otherwise (a caller that wrote first, e.g. a test inside a
    transaction) this connection reads alone, since others cannot see its uncommitted rows."""
    identity_ranges = _ranges(cursor, "profiles_identity", READERS)
    link_ranges = _ranges(cursor, "profiles_identitylink", READERS)
    cursor.execute("SELECT pg_current_xact_id_if_assigned() IS NULL")
    shares = [[("identities", _IDENTITIES, identity_ranges[n::READERS]), ("links", _LINKS, link_ranges[n::READERS])]
              for n in range(READERS)]
    readers = READERS if cursor.fetchone()[0] else 1
    if readers > 1:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        out = [None] * READERS
        threads = [threading.Thread(target=_reader, args=(snapshot, share, out, n)) for n, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in out:
            if isinstance(result, Exception):
                raise result
    else:
        with psycopg.Cursor(cursor.connection) as binary:
            out = [[(kind, _read(binary, statement, ranges)) for kind, statement, ranges in share] for share in shares]
    parts = {"identities": [], "links": []}
    for share in out:
        for kind, values in share:
            parts[kind].extend(values)
    identities = np.frombuffer(b"".join(parts["identities"]), dtype=_IDENTITY_RECORD)
    links = np.frombuffer(b"".join(parts["links"]), dtype=_LINK_RECORD)
    return GraphArrays(identities["id"].astype(np.int64), np.ascontiguousarray(identities["profile"]),
                       links["a"].astype(np.int64), links["b"].astype(np.int64), readers)


def components_of(graph: GraphArrays) -> tuple[int, np.ndarray]:
    """(number of components, component label per identity) from the active links."""
    n = len(graph.identity_ids)
    if n == 0:
        return 0, np.empty(0, dtype=np.int32)
    top = int(graph.identity_ids.max())
    if top < 4 * n + 1_000_000:  # ids from one sequence: a direct lookup table beats searchsorted
        position = np.full(top + 1, -1, dtype=np.int64)
        position[graph.identity_ids] = np.arange(n)
        rows, cols = position[graph.link_a], position[graph.link_b]
    else:
        order = np.argsort(graph.identity_ids)
        rows = order[np.searchsorted(graph.identity_ids, graph.link_a, sorter=order)]
        cols = order[np.searchsorted(graph.identity_ids, graph.link_b, sorter=order)]
    matrix = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(matrix, directed=False)


_FOLD = np.uint64(0x9E3779B97F4A7C15)


def _fold(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return hi ^ (lo * _FOLD)  # a 64-bit key of a 128-bit profile id (uint64 arithmetic wraps)


def repairs_find(graph: GraphArrays, count: int, labels: np.ndarray) -> Repair:
    """Components that hold several profiles, and profiles spread over several components.

    Vectorised and exact on the 128-bit profile ids: a component is mixed when any identity's
    profile differs from the one last written for the component; among the other (pure)
    components, two with the same profile mean that profile is spread. Keys are sorted, never
    argsorted (a plain sort of a million keys is ~10x cheaper); the few candidates a 64-bit
    key finds are then checked on all 128 bits.
    """
    if len(labels) == 0:
        return Repair(0, [], [])
    hi, lo = graph.profiles[:, 0], graph.profiles[:, 1]
    rep_hi, rep_lo = np.zeros(count, dtype=np.uint64), np.zeros(count, dtype=np.uint64)
    rep_hi[labels], rep_lo[labels] = hi, lo
    mixed_components = np.unique(labels[(hi != rep_hi[labels]) | (lo != rep_lo[labels])])
    pure = np.ones(count, dtype=bool)
    pure[mixed_components] = False
    pure_ids = np.nonzero(pure)[0]
    keys = _fold(rep_hi[pure_ids], rep_lo[pure_ids])
    sorted_keys = np.sort(keys)
    repeated = np.unique(sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]])
    members, profiles_of = _mixed(graph, labels, mixed_components)
    seen = defaultdict(int)
    for found in profiles_of.values():
        for profile in found:
            seen[profile] += 1
    spread = {profile for profile, times in seen.items() if times > 1}
    # A profile of a mixed component that is also some pure component's profile is spread too.
    mixed_keys = _fold(np.array([h for h, _ in seen], dtype=np.uint64), np.array([lw for _, lw in seen],
                                                                                  dtype=np.uint64))
    if len(sorted_keys):
        at = np.minimum(np.searchsorted(sorted_keys, mixed_keys), len(sorted_keys) - 1)
        repeated = np.union1d(repeated, mixed_keys[sorted_keys[at] == mixed_keys])
    check = repeated  # keys of pure components to check on all 128 bits
    pure_profiles = defaultdict(int)
    if len(check):
        for component in pure_ids[np.isin(keys, check)].tolist():
            pure_profiles[(int(rep_hi[component]), int(rep_lo[component]))] += 1
    spread |= {profile for profile, times in pure_profiles.items() if times > 1 or profile in seen}
    absorb = sum(len(found) - 1 for found in profiles_of.values())
    split_profiles = sorted(np.array(list(p), dtype="<u8").tobytes() for p in spread)
    return Repair(count, list(members.values()), split_profiles, absorb)


def _mixed(graph: GraphArrays, labels: np.ndarray, mixed_components: np.ndarray) -> tuple[dict, dict]:
    """Identity ids and the set of (hi, lo) profiles of each mixed component."""
    members, profiles_of = defaultdict(list), defaultdict(set)
    if len(mixed_components):
        is_mixed = np.zeros(int(labels.max()) + 1, dtype=bool)
        is_mixed[mixed_components] = True
        selected = is_mixed[labels]  # a lookup per identity, not isin's sort
        for label, identity_id, h, lw in zip(labels[selected].tolist(), graph.identity_ids[selected].tolist(),
                                            graph.profiles[selected, 0].tolist(), graph.profiles[selected, 1].tolist(),
                                            strict=True):
            members[label].append(identity_id)
            profiles_of[label].add((h, lw))
    return members, profiles_of


def identity_graph_rebuild(*, dry_run: bool = False) -> IdentityRebuild:
    """Recompute every component and repair disagreements (see module doc); logs a run row."""
    run = IdentityRebuild.objects.create(dry_run=dry_run)
    began = time.perf_counter()
    try:
        with transaction.atomic(), connection.cursor() as django_cursor:
            cursor = django_cursor.cursor
            locks.graph_lock_exclusive(cursor)
            graph = graph_copy_out(cursor)
            count, labels = components_of(graph)
            repair = repairs_find(graph, count, labels)
            run.identities, run.links, run.components = len(graph.identity_ids), len(graph.link_a), int(count)
            if not dry_run:
                _apply(cursor, repair, run)
            else:
                run.profiles_absorbed = repair.profiles_to_absorb
                run.profiles_created = len(repair.split_profiles)  # at least one new part each
    except Exception as exc:
        IdentityRebuild.objects.filter(id=run.id).update(status=IdentityRebuild.Status.FAILED, error=str(exc)[:2000],
                                                          finished_at=timezone.now(),
                                                          seconds=time.perf_counter() - began)
        logger.exception("identity rebuild failed", extra={"run": run.id})
        raise
    run.status, run.finished_at, run.seconds = IdentityRebuild.Status.DONE, timezone.now(), time.perf_counter() - began
    run.save()
    logger.info("identity rebuild done", extra={"run": run.id, "components": run.components,
                                                "moved": run.identities_moved, "seconds": round(run.seconds, 3)})
    return run


def _apply(cursor, repair: Repair, run: IdentityRebuild) -> None:
    now = timezone.now()
    for raw_profile in repair.split_profiles:
        profile_id = uuid.UUID(bytes=raw_profile)
        locks.profiles_lock(cursor, [profile_id])
        plan = split.split_plan(cursor, profile_id=profile_id)
        result = split.split_apply(cursor, plan, now=now, reason="rebuild: its identifiers are no longer connected")
        run.profiles_created += sum(1 for part in plan.parts[1:] if part.status == "new")
        run.identities_moved += result.identities_moved
        run.events_moved += result.events_moved
    if repair.merge_components:
        merges = _merges_for(cursor, repair.merge_components)
        states = store.states_load(cursor, {m.survivor for m in merges} | {m.absorbed for m in merges})
        for merge in merges:
            merge.snapshot = states[merge.survivor].to_snapshot()
            states[merge.survivor].absorb(states[merge.absorbed])
        counts = merges_apply(cursor, merges=merges, now=now, reason="rebuild: linked by active links")
        survivors = {m.survivor for m in merges}
        store.states_write(cursor, [states[s] for s in survivors], now=now)
        run.profiles_absorbed += len(merges)
        run.identities_moved += sum(c[0] for c in counts.values())
        run.events_moved += sum(c[1] for c in counts.values())
        hooks.profiles_changed(profile_ids=survivors | {m.absorbed for m in merges},
                               trait_names={n for s in survivors for n in states[s].trait_names()})
    _attach_orphan_transactions(cursor)


def _merges_for(cursor, components: list[list]) -> list[Merge]:
    """Per component holding several profiles (read again after splits): the oldest profile
    survives, the others are absorbed."""
    component_of = {identity_id: n for n, members in enumerate(components) for identity_id in members}
    cursor.execute("SELECT id, profile_id FROM profiles_identity WHERE id = ANY(%s)", [list(component_of)])
    profiles = defaultdict(set)
    for identity_id, profile_id in cursor.fetchall():
        profiles[component_of[identity_id]].add(profile_id)
    locked = locks.profiles_lock(cursor, {p for found in profiles.values() for p in found})
    merges = []
    for found in profiles.values():
        if len(found) < 2:
            continue
        survivor = min(found, key=lambda p: locks.survivor_key(p, locked[p][0], locked[p][2]))
        merges.extend(Merge(p, survivor, None, "rebuild") for p in sorted(set(found) - {survivor}, key=str))
    return merges


def _attach_orphan_transactions(cursor) -> None:
    """Transactions whose order event was resolved but that were written later stay unattached
    otherwise; the nightly rebuild attaches them (index transaction_profile_ts_idx finds NULLs)."""
    cursor.execute("SELECT EXISTS (SELECT 1 FROM profiles_transaction WHERE profile_id IS NULL)")
    if not cursor.fetchone()[0]:
        return
    cursor.execute(sql.SQL(
        "UPDATE profiles_transaction t SET profile_id = e.profile_id FROM profiles_event e "
        "WHERE t.profile_id IS NULL AND e.type = 'track' AND e.name = ANY(%s) AND e.source_id = t.source_id "
        "AND {order_id} = t.order_id AND e.profile_id IS NOT NULL AND e.profile_id <> %s "
        "RETURNING t.profile_id").format(order_id=store.ORDER_ID_SQL),
        [list(store.ORDER_EVENT_NAMES), store.UNATTRIBUTED])
    hooks.transactions_changed(profile_ids={row[0] for row in cursor.fetchall()})
