"""Real-time membership: re-evaluate just the profiles that changed, and the timer sweep.

Identity resolution calls `cdp.hooks.profiles_changed` inside its transaction: the change is
queued there (`RealtimeChange` rows, one per profile, with the event and trait names touched)
and a `segments.realtime_drain` task (queue `realtime`) is sent on commit. One drainer at a
time (a session advisory lock) reads everything waiting and evaluates it as one batch, so under
load many small changes become a few large batches. In a batch each segment is evaluated only
for the profiles whose own change it reads (or that a segment it uses was evaluated for), in
its own transaction, the segments with the fewest such profiles first; the rows are deleted
after the last one, so a crash brings them back. Evaluation is the same compiled query as the
full recompute restricted to the ids. Absorbed profiles (merged away) leave every segment. The
sweep re-evaluates profiles whose `next_change_at` has come, so answers that change by time
alone flip within the sweep interval.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdp import flags
from segments.evaluation import evaluation_statement
from segments.evaluation.compiler import uuid_array
from segments.models import MembershipChange, Segment
from segments.services.membership import Changes, apply_partial, remove_everywhere, segment_lock_key

logger = logging.getLogger(__name__)

CHUNK = 1000  # profile ids per statement
SWEEP_LIMIT = 2000
DRAIN_BATCH = 2000  # queued changes claimed per batch
LAG_SAMPLE = 20  # profiles whose latest event dates the batch's lag
# pg_try_advisory_lock (session) key: one drainer at a time; unique in this project.
DRAIN_LOCK = 0x5E6_D7A1


@dataclass
class RealtimeResult:
    evaluated: list[int] = field(default_factory=list)  # segment ids
    locked: list[int] = field(default_factory=list)  # busy with a recompute: retry later
    failed: list[int] = field(default_factory=list)  # a database error: skipped (logged)
    entered: int = 0
    exited: int = 0
    removed: int = 0


def _uuids(values) -> list[uuid.UUID]:
    parsed = []
    for value in values or ():
        try:
            parsed.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return sorted(set(parsed))


def affected_segments(*, event_names=(), trait_names=(), segment_ids=None) -> list[Segment]:
    """Active real-time segments a change to these names can affect, plus every segment that
    depends on one of them, ordered so a segment comes after the segments it uses."""
    base = Segment.objects.filter(is_active=True, kind=Segment.Kind.RULES, is_realtime=True)
    if segment_ids is not None:
        selected = base.filter(id__in=segment_ids)
    elif not event_names and not trait_names:
        selected = base  # "something changed": evaluate everything for these profiles
    else:
        condition = Q(trait_names__overlap=list(trait_names)) | Q(event_names__overlap=list(event_names))
        if event_names:
            condition |= Q(any_event=True)
        selected = base.filter(condition)
    chosen = {segment.pk: segment for segment in selected}
    everything = {segment.pk: segment for segment in base}
    added = True
    while added:  # dependents, transitively
        added = False
        for segment in everything.values():
            if segment.pk not in chosen and set(segment.depends_on) & set(chosen):
                chosen[segment.pk] = segment
                added = True
    return _dependency_order(chosen)


def _dependency_order(segments: dict[int, Segment]) -> list[Segment]:
    ordered, done = [], set()

    def visit(segment_id, trail=()):
        if segment_id in done or segment_id not in segments or segment_id in trail:
            return
        for dependency in segments[segment_id].depends_on:
            visit(dependency, (*trail, segment_id))
        done.add(segment_id)
        ordered.append(segments[segment_id])

    for segment_id in sorted(segments):
        visit(segment_id)
    return ordered


def _segment_ids(segment: Segment) -> dict[str, int]:
    if not segment.depends_on:
        return {}
    return dict(Segment.objects.filter(id__in=segment.depends_on).values_list("key", "id"))


def evaluate_profiles(*, segment_id: int, profile_ids: list[uuid.UUID], now: datetime,
                      cause: str = MembershipChange.Cause.REALTIME, invalidate: bool = True) -> Changes | None:
    """Re-evaluate one segment for these profiles and apply the result; None if a recompute of
    the segment holds its lock (the caller retries). `invalidate`: drop the changed profiles'
    cached lookups once committed (a caller that drops every profile's does not need it)."""
    changes = Changes()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [segment_lock_key(segment_id)])
        if not cursor.fetchone()[0]:
            return None
        # Restricted statements are small: parallel workers would only add their start-up cost
        # (measured 42 -> 20 ms for 150 profiles) and compete for the cores. Memberships are
        # derived and the queued changes are deleted only after every segment of the batch
        # (a later commit in the same WAL), so a commit lost in a crash brings the changes back
        # for another evaluation: no need to wait for the WAL flush (a COMMIT under load was a
        # quarter of a backend on average, waiting for the disk).
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute("SET LOCAL synchronous_commit = off")
        segment = Segment.objects.get(pk=segment_id)
        if not segment.is_active or segment.kind != Segment.Kind.RULES:
            cursor.execute("DELETE FROM segments_timer WHERE segment_id = %s AND profile_id = ANY(%s::uuid[])",
                           [segment_id, uuid_array(profile_ids)])
            return changes
        segment_ids = _segment_ids(segment)
        for start in range(0, len(profile_ids), CHUNK):
            chunk = profile_ids[start:start + CHUNK]
            statement = evaluation_statement(segment.definition, now=now, segment_ids=segment_ids, profile_ids=chunk)
            statement.execute(cursor)
            rows = cursor.fetchall()
            if not segment.is_realtime:
                rows = [(row[0], row[1], None) for row in rows]
            part = apply_partial(cursor, segment=segment, profile_ids=chunk, rows=rows, now=now, cause=cause)
            changes.entered += part.entered
            changes.exited += part.exited
    if changes.count and invalidate:
        from segments.lookup import lookup_cache_invalidate_profiles

        # After the commit (of an enclosing batch too): a lookup in between would cache the old answer.
        changed = changes.entered + changes.exited
        transaction.on_commit(lambda: lookup_cache_invalidate_profiles(profile_ids=changed))
    return changes


def realtime_evaluate(*, profile_ids, event_names=(), trait_names=(), segment_ids=None,
                      names_by_profile: dict | None = None) -> RealtimeResult:
    """Bring the memberships of these profiles up to date (see module docstring). Each segment is
    evaluated in its own transaction and is visible (its changed profiles' cached lookups
    dropped) as soon as that commits, the segments with the fewest profiles to evaluate first:
    a segment on a rare event does not wait for the heavy ones of the same batch. Cached lookups
    of every given profile are dropped at the end — identities may have moved between them.
    `names_by_profile` (profile id -> (event names, trait names), both empty: anything may have
    changed): evaluate each segment only for the profiles whose own change it reads."""
    ids = _uuids(profile_ids)
    result = RealtimeResult()
    if not ids:
        return result
    now = timezone.now()
    with transaction.atomic():
        live = _live_or_removed(ids, now=now, result=result, remove=segment_ids is None)
    segments = affected_segments(event_names=event_names, trait_names=trait_names,
                                 segment_ids=segment_ids) if live else []
    for segment, chosen in _profiles_per_segment(segments, live, names_by_profile):
        _evaluate_one(segment, chosen, now=now, result=result)
    with transaction.atomic():
        if result.evaluated:
            Segment.objects.filter(pk__in=result.evaluated).update(realtime_evaluated_at=timezone.now())
        if result.evaluated and event_names:
            _record_lag(segment_ids=result.evaluated, profile_ids=live, now=now)
    from segments.lookup import lookup_cache_invalidate_profiles

    transaction.on_commit(lambda: lookup_cache_invalidate_profiles(profile_ids=ids))
    return result


def _reads(segment: Segment, events: set, traits: set) -> bool:
    if not events and not traits:
        return True  # a merge or an unknown change: anything may have changed
    return bool(traits & set(segment.trait_names) or events & set(segment.event_names)
                or (events and segment.any_event))


def _profiles_per_segment(segments: list[Segment], live: list, names_by_profile: dict | None) -> list[tuple]:
    """(segment, the live profiles to evaluate for it), in the segments' dependency order. A
    profile whose change is a page view need not be evaluated for a cart segment: under load a
    batch mixes many kinds of change, and this halves the profile-segment evaluations of the
    seven templates. A segment using another one is evaluated for that one's profiles too."""
    if names_by_profile is None:
        return [(segment, live) for segment in segments]
    chosen: dict[int, set] = {}
    for segment in segments:
        ids = {profile_id for profile_id in live if _reads(segment, *names_by_profile.get(profile_id, ((), ())))}
        for dependency in segment.depends_on:
            ids |= chosen.get(dependency, set())
        chosen[segment.pk] = ids
    return _fewest_first([(segment, sorted(chosen[segment.pk])) for segment in segments if chosen[segment.pk]])


def _fewest_first(work: list[tuple]) -> list[tuple]:
    """Shortest job first (the least mean time to visible), a segment still after the segments
    it uses; `work` comes in dependency order, which breaks ties."""
    ordered, waiting = [], list(work)
    while waiting:
        pending = {segment.pk for segment, _ in waiting}
        ready = [item for item in waiting if not set(item[0].depends_on) & pending]
        item = min(ready or waiting[:1], key=lambda entry: len(entry[1]))
        waiting.remove(item)
        ordered.append(item)
    return ordered


def _live_or_removed(ids: list[uuid.UUID], *, now: datetime, result: RealtimeResult, remove: bool) -> list:
    """The ids of live profiles; absorbed (merged away) or deleted ones leave every segment."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM profiles_profile WHERE id = ANY(%s::uuid[]) AND merged_into_id IS NULL",
                       [uuid_array(ids)])
        live = sorted(row[0] for row in cursor.fetchall())
        gone = sorted(set(ids) - set(live))
        if gone and remove:
            removed = remove_everywhere(cursor, profile_ids=gone, now=now, cause=MembershipChange.Cause.MERGE)
            result.removed = sum(len(v) for v in removed.values())
    return live


def _evaluate_one(segment: Segment, live: list, *, now: datetime, result: RealtimeResult) -> None:
    """One segment of a batch (a savepoint); an error skips it (logged, no personal data) instead
    of failing the batch: queued changes come back after a failed batch, so one broken segment
    would otherwise hold every change back."""
    try:
        changes = evaluate_profiles(segment_id=segment.pk, profile_ids=live, now=now)
    except Exception as exc:  # noqa: BLE001 - isolating one segment; the type is logged
        logger.warning("real-time evaluation of a segment failed", extra={
            "segment_id": segment.pk, "profiles": len(live), "error": type(exc.__cause__ or exc).__name__})
        result.failed.append(segment.pk)
        return
    if changes is None:
        result.locked.append(segment.pk)
        return
    result.evaluated.append(segment.pk)
    result.entered += len(changes.entered)
    result.exited += len(changes.exited)


def _record_lag(*, segment_ids: list[int], profile_ids: list[uuid.UUID], now: datetime) -> None:
    """Freshness for the segment page: last event received -> membership updated, in ms."""
    with connection.cursor() as cursor:
        # Index: profiles_event_profile_name_ts (profile_id, ...); the day bound prunes partitions.
        # A sample of the batch is enough for a freshness figure (all 500 of a batch cost 20 ms).
        cursor.execute("SELECT max(received_at) FROM profiles_event WHERE profile_id = ANY(%s) AND timestamp > %s",
                       [profile_ids[:LAG_SAMPLE], now - timedelta(days=1)])
        received = cursor.fetchone()[0]
    if received is not None:
        lag_ms = max(0, int((timezone.now() - received).total_seconds() * 1000))
        Segment.objects.filter(pk__in=segment_ids).update(realtime_lag_ms=lag_ms)


def timers_sweep(*, limit: int = SWEEP_LIMIT) -> int:
    """Re-evaluate profiles whose next_change_at has come; returns how many were handled."""
    now = timezone.now()
    with connection.cursor() as cursor:
        # Index: timer_due_idx (due_at).
        cursor.execute("SELECT segment_id, profile_id FROM segments_timer WHERE due_at <= %s ORDER BY due_at LIMIT %s",
                       [now, limit])
        due = cursor.fetchall()
    by_segment: dict[int, list[uuid.UUID]] = {}
    for segment_id, profile_id in due:
        by_segment.setdefault(segment_id, []).append(profile_id)
    handled = 0
    for segment_id, ids in by_segment.items():
        changes = evaluate_profiles(segment_id=segment_id, profile_ids=sorted(ids), now=now,
                                    cause=MembershipChange.Cause.TIMER)
        if changes is not None:
            handled += len(ids)
            Segment.objects.filter(pk=segment_id).update(realtime_evaluated_at=timezone.now())
            with connection.cursor() as cursor:
                # Anything still due for these ids would loop: evaluation only sets future moments.
                cursor.execute("DELETE FROM segments_timer WHERE segment_id = %s AND profile_id = ANY(%s::uuid[]) "
                               "AND due_at <= %s", [segment_id, uuid_array(ids), now])
    return handled


# -- the queue of changes ----------------------------------------------------------------------

def realtime_changes_queue(*, profile_ids, event_names=(), trait_names=(), event_names_by_profile=None) -> int:
    """Queue changed profiles for the drainer (one statement); returns how many were queued.
    `event_names_by_profile` ({profile id: names}) narrows a profile's event names to its own."""
    ids = _uuids(profile_ids)
    if not ids:
        return 0
    events = sorted(set(event_names))
    own = {str(key): sorted(set(names)) for key, names in (event_names_by_profile or {}).items()}
    rows = [[str(profile_id), own.get(str(profile_id), events)] for profile_id in ids]
    with connection.cursor() as cursor:
        # One jsonb array of [id, [event names]]: each row its own names, one round trip. Only
        # profiles that exist: an erasure announces the ids it just deleted, and a queued row
        # would keep the erased person's id (memberships went with the erasure itself).
        # Index: profiles_profile_pkey.
        cursor.execute("INSERT INTO segments_realtimechange (profile_id, event_names, trait_names, created_at) "
                       "SELECT (r ->> 0)::uuid, ARRAY(SELECT jsonb_array_elements_text(r -> 1))::varchar[], "
                       "%s::varchar[], now() FROM jsonb_array_elements(%s::jsonb) AS r "
                       "WHERE EXISTS (SELECT 1 FROM profiles_profile p WHERE p.id = (r ->> 0)::uuid)",
                       [sorted(set(trait_names)), orjson.dumps(rows).decode()])
        return cursor.rowcount


@dataclass
class DrainedBatch:
    profile_ids: list[str]
    event_names: list[str]
    trait_names: list[str]
    result: RealtimeResult


def _claim_batch(cursor) -> list[tuple]:
    # Read, not deleted: every segment of the batch commits on its own, and the rows are deleted
    # after the last one (_changes_done), so a drainer that dies mid-batch leaves them for the
    # next. Only the holder of DRAIN_LOCK gets here. The table holds seconds of changes.
    cursor.execute("SELECT id, profile_id, event_names, trait_names FROM segments_realtimechange ORDER BY id "
                   "LIMIT %s", [DRAIN_BATCH])
    return cursor.fetchall()


def _changes_done(rows: list[tuple]) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("DELETE FROM segments_realtimechange WHERE id = ANY(%s::bigint[])",
                       ["{" + ",".join(str(row[0]) for row in rows) + "}"])


def _drain_once() -> DrainedBatch | None:
    """Claim up to DRAIN_BATCH queued changes and evaluate them as one batch."""
    began = time.monotonic()
    with connection.cursor() as cursor:
        rows = _claim_batch(cursor)
    if not rows:
        return None
    # A change without names means "anything may have changed" (a merge): every segment.
    everything = any(not events and not traits for _, _, events, traits in rows)
    events = set() if everything else {name for row in rows for name in row[2]}
    traits = set() if everything else {name for row in rows for name in row[3]}
    ids = sorted({str(row[1]) for row in rows})
    result = realtime_evaluate(profile_ids=ids, event_names=sorted(events), trait_names=sorted(traits),
                               names_by_profile=_names_by_profile(rows))
    _changes_done(rows)
    logger.info("real-time batch evaluated", extra={
        "changes": len(rows), "profiles": len(ids), "segments": len(result.evaluated), "entered": result.entered,
        "exited": result.exited, "ms": round((time.monotonic() - began) * 1000)})
    return DrainedBatch(ids, sorted(events), sorted(traits), result)


def _names_by_profile(rows: list[tuple]) -> dict:
    """profile id -> (event names, trait names) of its queued changes; (set(), set()) when one
    of them named nothing (anything may have changed)."""
    names: dict = {}
    for _, profile_id, events, traits in rows:
        known = names.setdefault(profile_id, (set(), set()))
        if known is not None and (events or traits):
            known[0].update(events)
            known[1].update(traits)
        else:
            names[profile_id] = None
    return {profile_id: value or (set(), set()) for profile_id, value in names.items()}


# Set while a drain task is queued and not started (cdp.flags): changes committed meanwhile need
# no message of their own, so a sustained load queues one drain task, not one per change
# (measured: 1,000 redundant messages piled up in a 40-second run). Expires in case a message is
# lost; the timer sweep drains too.
DRAIN_REQUESTED = "cdp:segments:realtime-drain-requested"


def realtime_drain_request() -> bool:
    """After a change committed: send the drain task unless one is already queued; True if sent."""
    from segments.tasks import realtime_drain_task

    if not flags.flag_set_once(DRAIN_REQUESTED):
        return False
    realtime_drain_task.delay()
    return True


def realtime_drain_started() -> None:
    """A drain task starts: changes committed from now on need a new message."""
    flags.flag_clear(DRAIN_REQUESTED)


def _waiting(cursor) -> bool:
    cursor.execute("SELECT EXISTS (SELECT 1 FROM segments_realtimechange)")
    return cursor.fetchone()[0]


def realtime_drain(*, max_seconds: float = 10.0) -> tuple[list[DrainedBatch], bool]:
    """Evaluate queued changes until none wait (or `max_seconds` pass) if no other drainer runs;
    returns (the batches, whether changes still wait). A caller that finds the lock taken leaves
    its changes to the running drainer, which looks again after letting go of the lock (the
    changes were committed before the caller tried it)."""
    deadline = time.monotonic() + max_seconds
    batches: list[DrainedBatch] = []
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [DRAIN_LOCK])
            if not cursor.fetchone()[0]:
                return batches, False
            try:
                while time.monotonic() < deadline:
                    batch = _drain_once()
                    if batch is None:
                        break
                    batches.append(batch)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [DRAIN_LOCK])
            if time.monotonic() >= deadline:
                return batches, _waiting(cursor)
            if not _waiting(cursor):
                return batches, False
