"""Full rebuild: recompute every component from the active links and repair what disagrees.

The resolver and the un-merge keep components right incrementally; the rebuild is the safety
net (beat, nightly; `manage.py identity_rebuild`). Under the exclusive graph lock it:
1. copies out (identity id, profile id) and the active links with binary COPY into NumPy;
2. builds a CSR matrix and runs `scipy.sparse.csgraph.connected_components` (never iterative
   SQL: measured ~330x slower on this data, see PERF-NOTES);
3. compares components with profiles, vectorised: a component holding identities of several
   profiles was a missed merge, a profile spread over several components a missed split;
4. repairs only those: splits through split.py (the same rules as an un-merge), then merges
   through merge.py, both set-based with COPY into temporary tables.
"""

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
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

# Rows go out with COPY, but as a few big bytea values (one aggregate per column, per chunk of
# ids), not one COPY message per row: 2.5 M rows as CopyData messages cost ~3 s of protocol
# handling alone. Both aggregates of a chunk see the rows in the same order, so the columns stay
# aligned. COPY takes no parameters: the bounds are composed as literals by psycopg.sql.
_IDENTITIES = sql.SQL("COPY (SELECT string_agg(int8send(id), ''::bytea), string_agg(uuid_send(profile_id), "
                      "''::bytea) FROM profiles_identity WHERE id >= {} AND id < {}) TO STDOUT (FORMAT binary)")
_LINKS = sql.SQL("COPY (SELECT string_agg(int8send(identity_a_id), ''::bytea), string_agg(int8send(identity_b_id), "
                 "''::bytea) FROM profiles_identitylink WHERE is_active AND id >= {} AND id < {}) "
                 "TO STDOUT (FORMAT binary)")
_HEADER = 19  # binary COPY: 11-byte signature, 4-byte flags, 4-byte header extension length (0)
CHUNK = 4_000_000  # ids per round trip: keeps every value far below PostgreSQL's 1 GB limit


@dataclass
class GraphArrays:
    identity_ids: np.ndarray  # int64
    profiles: np.ndarray  # (n, 2) uint64: the profile uuid's 16 bytes
    link_a: np.ndarray  # int64 identity ids
    link_b: np.ndarray


@dataclass
class Repair:
    components: int
    merge_components: list  # lists of identity ids, one per component holding several profiles
    split_profiles: list  # profile ids (uuid bytes) spread over several components
    profiles_to_absorb: int = 0  # before splits: sum over mixed components of (profiles - 1)


def _copied_fields(data: bytes) -> list[bytes | None]:
    """The fields of the single row of a binary COPY."""
    count = int.from_bytes(data[_HEADER:_HEADER + 2], "big", signed=True)
    fields, offset = [], _HEADER + 2
    for _ in range(count):
        length = int.from_bytes(data[offset:offset + 4], "big", signed=True)
        offset += 4
        fields.append(None if length < 0 else data[offset:offset + length])
        offset += max(length, 0)
    return fields


def _columns(cursor, query: sql.Composable, table: str) -> tuple[bytes, bytes]:
    """The two aggregated columns of `query` over all ids of `table`, chunk by chunk."""
    cursor.execute(sql.SQL("SELECT coalesce(min(id), 0), coalesce(max(id), -1) FROM {}").format(
        sql.Identifier(table)))
    low, high = cursor.fetchone()
    first, second = [], []
    for start in range(low, high + 1, CHUNK):
        with cursor.copy(query.format(sql.Literal(start), sql.Literal(start + CHUNK))) as copy:
            a, b = _copied_fields(b"".join(bytes(block) for block in copy))
        if a is not None:
            first.append(a)
            second.append(b)
    return b"".join(first), b"".join(second)


def graph_copy_out(cursor) -> GraphArrays:
    """Identities (id, profile) and active links as arrays, read without a per-row Python step."""
    ids, profiles = _columns(cursor, _IDENTITIES, "profiles_identity")
    link_a, link_b = _columns(cursor, _LINKS, "profiles_identitylink")
    return GraphArrays(np.frombuffer(ids, dtype=">i8").astype(np.int64),
                       np.frombuffer(profiles, dtype="<u8").reshape(-1, 2),
                       np.frombuffer(link_a, dtype=">i8").astype(np.int64),
                       np.frombuffer(link_b, dtype=">i8").astype(np.int64))


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


def repairs_find(graph: GraphArrays, count: int, labels: np.ndarray) -> Repair:
    """Components that hold several profiles, and profiles spread over several components.

    Vectorised and exact on the 128-bit profile ids: a component is mixed when any identity's
    profile differs from the one last written for the component; among the other (pure)
    components, two with the same profile mean that profile is spread.
    """
    if len(labels) == 0:
        return Repair(0, [], [])
    hi, lo = graph.profiles[:, 0], graph.profiles[:, 1]
    rep_hi, rep_lo = np.zeros(count, dtype=np.uint64), np.zeros(count, dtype=np.uint64)
    rep_hi[labels], rep_lo[labels] = hi, lo
    mixed_rows = (hi != rep_hi[labels]) | (lo != rep_lo[labels])
    mixed_components = np.unique(labels[mixed_rows])
    pure = np.ones(count, dtype=bool)
    pure[mixed_components] = False
    pure_ids = np.nonzero(pure)[0]
    key = rep_hi[pure_ids] ^ (rep_lo[pure_ids] * _FOLD)
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    same = np.nonzero(sorted_keys[1:] == sorted_keys[:-1])[0]
    spread = set()
    for n in same.tolist():  # verify candidates on all 128 bits (a 64-bit fold may collide)
        a, b = pure_ids[order[n]], pure_ids[order[n + 1]]
        if rep_hi[a] == rep_hi[b] and rep_lo[a] == rep_lo[b]:
            spread.add((int(rep_hi[a]), int(rep_lo[a])))
    members, profiles_of = defaultdict(list), defaultdict(set)
    if len(mixed_components):
        selected = np.isin(labels, mixed_components)
        for label, identity_id, h, lw in zip(labels[selected].tolist(), graph.identity_ids[selected].tolist(),
                                            hi[selected].tolist(), lo[selected].tolist(), strict=True):
            members[label].append(identity_id)
            profiles_of[label].add((h, lw))
        seen = defaultdict(int)
        for found in profiles_of.values():
            for profile in found:
                seen[profile] += 1
        spread |= {profile for profile, times in seen.items() if times > 1}
        # A profile of a mixed component that is also some pure component's profile is spread too.
        candidates = list(seen)
        folded = np.array([h ^ ((lw * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) for h, lw in candidates],
                          dtype=np.uint64)
        at = np.searchsorted(sorted_keys, folded)
        for (h, lw), position, fold in zip(candidates, at.tolist(), folded.tolist(), strict=True):
            while position < len(sorted_keys) and sorted_keys[position] == fold:
                component = pure_ids[order[position]]
                if int(rep_hi[component]) == h and int(rep_lo[component]) == lw:
                    spread.add((h, lw))
                    break
                position += 1
    absorb = sum(len(found) - 1 for found in profiles_of.values())
    split_profiles = sorted(np.array(list(p), dtype="<u8").tobytes() for p in spread)
    return Repair(count, list(members.values()), split_profiles, absorb)


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
