"""Full recomputes: queued runs, the per-segment advisory lock, stale runs, failures, the dispatcher."""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from segments.errors import SegmentError
from segments.evaluation import evaluation_statement
from segments.models import MembershipChange, Segment, SegmentRun
from segments.services.definitions import definition_check
from segments.services.membership import apply_full, segment_lock_key

logger = logging.getLogger(__name__)

LOCK_WAIT = "30s"
REQUEUE_QUEUED_AFTER = timedelta(minutes=10)
CLEANUP_BATCH = 10_000


class StaleRun(Exception):
    """The run lost to a newer definition or a newer run; its result must not be applied."""


@dataclass
class RunResult:
    run_id: int
    status: str
    size: int | None = None
    entered: int | None = None
    exited: int | None = None


def segment_recompute_request(*, segment: Segment, trigger: str, actor=None) -> SegmentRun:
    """Queue a recompute of `segment` (sent after commit); a run already queued is reused."""
    from segments.tasks import segment_recompute_task

    queued = SegmentRun.objects.filter(segment=segment, status=SegmentRun.Status.QUEUED).order_by("id").first()
    if queued is not None:
        return queued
    user = actor if getattr(actor, "is_authenticated", False) else None
    run = SegmentRun.objects.create(segment=segment, trigger=trigger, requested_at=timezone.now(), requested_by=user)
    transaction.on_commit(lambda: segment_recompute_task.delay(run_id=run.id))
    return run


def _claim(run_id: int) -> SegmentRun | None:
    """Mark the run running (a redelivered or retried run may be claimed again)."""
    claimed = SegmentRun.objects.filter(pk=run_id).exclude(
        status__in=(SegmentRun.Status.SUCCEEDED, SegmentRun.Status.STALE)).update(
        status=SegmentRun.Status.RUNNING, started_at=timezone.now(), error="")
    if not claimed:
        return None
    SegmentRun.objects.filter(pk=run_id).update(attempts=F("attempts") + 1)
    return SegmentRun.objects.select_related("segment").get(pk=run_id)


def segment_recompute(*, run_id: int) -> RunResult:
    """Evaluate the segment's definition over all profiles and swap the membership atomically.

    Under `pg_advisory_xact_lock(segment)` one transaction: evaluate into a temp table, write
    the difference (entering rows at version v+1, leaving rows closed at v+1, history with the
    definition version), replace the timers, then move the version pointer with a conditional
    UPDATE. If the definition changed meanwhile, or a run requested later has already finished,
    the run is stale and rolls back. A failure or a killed worker rolls everything back: the
    previous membership stays as it was.
    """
    run = _claim(run_id)
    if run is None:
        return RunResult(run_id, "skipped")
    began = time.monotonic()
    try:
        with transaction.atomic():
            result = _recompute_locked(run, began)
    except StaleRun as exc:
        SegmentRun.objects.filter(pk=run.pk).update(status=SegmentRun.Status.STALE, finished_at=timezone.now(),
                                                    error=str(exc)[:300])
        logger.info("segment recompute stale", extra={"segment_id": run.segment_id, "run_id": run.pk})
        return RunResult(run.pk, SegmentRun.Status.STALE)
    except Exception as exc:
        _record_failure(run, exc, began)
        raise
    _after_success(run.segment_id, result)
    return result


def _recompute_locked(run: SegmentRun, began: float) -> RunResult:
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
        cursor.execute("SET LOCAL statement_timeout = %s", [f"{settings.CDP_SEGMENT_RECOMPUTE_TIMEOUT}s"])
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [segment_lock_key(run.segment_id)])
        segment = Segment.objects.get(pk=run.segment_id)
        if not segment.is_active or segment.kind != Segment.Kind.RULES:
            raise StaleRun("the segment is archived or static")
        if (segment.computed_at and segment.computed_at >= run.requested_at
                and segment.computed_definition_version == segment.definition_version):
            raise StaleRun("a run requested later already computed this definition")
        now = timezone.now()
        checked = definition_check(segment.definition, segment=segment)
        statement = evaluation_statement(segment.definition, now=now, segment_ids=checked.segment_ids)
        # CREATE TABLE AS (not INSERT … SELECT) so PostgreSQL may run the query in parallel.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.segments_eval")
        cursor.execute("CREATE TEMP TABLE segments_eval ON COMMIT DROP AS " + statement.text(), statement.params)
        cursor.execute("ANALYZE segments_eval")
        version = segment.membership_version + 1
        size, entered, exited = apply_full(cursor, segment=segment, version=version, now=now,
                                           cause=MembershipChange.Cause.RECOMPUTE)
        duration_ms = int((time.monotonic() - began) * 1000)
        # The swap: readers follow membership_version. Conditional on nothing having moved.
        moved = Segment.objects.filter(pk=segment.pk, membership_version=segment.membership_version,
                                       definition_version=segment.definition_version).update(
            membership_version=version, member_count=size, status=Segment.Status.OK, computed_at=now,
            computed_definition_version=segment.definition_version, compute_duration_ms=duration_ms, last_error="",
            consecutive_failures=0)
        if not moved:
            raise StaleRun("the definition or membership changed during the run")
        SegmentRun.objects.filter(pk=run.pk).update(
            status=SegmentRun.Status.SUCCEEDED, finished_at=timezone.now(), definition_version=segment.definition_version,
            membership_version=version, size=size, entered=entered, exited=exited, duration_ms=duration_ms)
    logger.info("segment recomputed", extra={"segment_id": segment.pk, "run_id": run.pk, "size": size,
                                             "entered": entered, "exited": exited, "ms": duration_ms})
    return RunResult(run.pk, SegmentRun.Status.SUCCEEDED, size, entered, exited)


def _error_text(exc: Exception) -> str:
    """A reason for the page and the log, without values from the data (no personal data)."""
    if isinstance(exc, SegmentError):
        return exc.message[:300]
    cause = exc.__cause__ or exc
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == "57014":
        return f"timed out after {settings.CDP_SEGMENT_RECOMPUTE_TIMEOUT} s (CDP_SEGMENT_RECOMPUTE_TIMEOUT)"
    if sqlstate == "55P03":
        return "another recompute of this segment held its lock for too long"
    if sqlstate:
        return f"database error {type(cause).__name__} (SQLSTATE {sqlstate})"
    return f"{type(exc).__name__}"


def _record_failure(run: SegmentRun, exc: Exception, began: float) -> None:
    reason = _error_text(exc)
    now = timezone.now()
    with transaction.atomic():
        SegmentRun.objects.filter(pk=run.pk).update(status=SegmentRun.Status.FAILED, finished_at=now, error=reason,
                                                    duration_ms=int((time.monotonic() - began) * 1000))
        Segment.objects.filter(pk=run.segment_id).update(status=Segment.Status.FAILING, last_error=reason,
                                                         consecutive_failures=F("consecutive_failures") + 1)
    logger.warning("segment recompute failed", extra={"segment_id": run.segment_id, "run_id": run.pk,
                                                      "reason": reason})


def _after_success(segment_id: int, result: RunResult) -> None:
    from segments.lookup import lookup_cache_invalidate_recent
    from segments.tasks import membership_cleanup_task

    transaction.on_commit(lambda: membership_cleanup_task.delay(segment_id=segment_id))
    if result.entered or result.exited:
        lookup_cache_invalidate_recent(segment_id=segment_id, changed=(result.entered or 0) + (result.exited or 0))
        with transaction.atomic():
            for dependent in Segment.objects.filter(is_active=True, depends_on__contains=[segment_id]):
                segment_recompute_request(segment=dependent, trigger="dependency")


def recompute_dispatch(*, now=None) -> int:
    """Queue the segments whose schedule is due (claimed with a conditional UPDATE, so two
    beats never double-queue) and re-send runs stuck in the queue; returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Index: segment_next_run_idx (next_run_at) partial on scheduled, active segments.
            cursor.execute(
                "UPDATE segments_segment SET next_run_at = %s + schedule_minutes * interval '1 minute' "
                "WHERE is_active AND kind = 'rules' AND schedule_minutes IS NOT NULL "
                "AND (next_run_at IS NULL OR next_run_at <= %s) RETURNING id", [now, now])
            due = [row[0] for row in cursor.fetchall()]
        for segment in Segment.objects.filter(id__in=due):
            segment_recompute_request(segment=segment, trigger="schedule")
            queued += 1
    from segments.tasks import segment_recompute_task

    stuck = list(SegmentRun.objects.filter(status=SegmentRun.Status.QUEUED,
                                           requested_at__lt=now - REQUEUE_QUEUED_AFTER).values_list("id", flat=True))
    for run_id in stuck:
        segment_recompute_task.delay(run_id=run_id)
    return queued + len(stuck)


def membership_cleanup(*, segment_id: int, batch: int = CLEANUP_BATCH) -> int:
    """Delete closed membership rows no reader can see any more, in bounded batches."""
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            # Index: membership_closed_idx (segment_id) WHERE version_to IS NOT NULL.
            cursor.execute(
                "DELETE FROM segments_membership WHERE id IN (SELECT m.id FROM segments_membership m "
                "JOIN segments_segment s ON s.id = m.segment_id WHERE m.segment_id = %s AND m.version_to IS NOT NULL "
                "AND m.version_to <= s.membership_version LIMIT %s)", [segment_id, batch])
            count = cursor.rowcount
        deleted += count
        if count < batch:
            return deleted

