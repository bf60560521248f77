"""Static segments: uploaded lists of ids / emails, kept in the same versioned membership table."""

import logging
import time
import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from consent.services import audit_record
from profiles.identifiers import identity_hash, normalize
from segments.errors import SegmentError
from segments.models import MembershipChange, Segment, SegmentRun
from segments.services.membership import apply_full, eval_table_create, segment_lock_key

logger = logging.getLogger(__name__)

MAX_ROWS = 100_000
KINDS = ("email", "user_id", "anonymous_id", "phone", "crm_id", "device_id", "profile_id")


@dataclass
class StaticUploadReport:
    rows: int = 0
    matched: int = 0
    problems: list[dict] = field(default_factory=list)  # {"row": n, "reason": ...}; never the value itself
    size: int = 0
    entered: int = 0
    exited: int = 0


def _resolve(entries: list[tuple[int, str, str]], report: StaticUploadReport) -> set[uuid.UUID]:
    """Profile ids for (row, kind, value) entries, matching identities on keyed hashes."""
    hashed: dict[tuple[str, bytes], list[int]] = {}
    direct: dict[uuid.UUID, list[int]] = {}
    for row, kind, value in entries:
        if kind not in KINDS:
            report.problems.append({"row": row, "reason": f"unknown identifier kind {kind[:30]!r}"})
            continue
        if kind == "profile_id":
            try:
                direct.setdefault(uuid.UUID(str(value).strip()), []).append(row)
            except ValueError:
                report.problems.append({"row": row, "reason": "not a profile id (UUID)"})
            continue
        normalized = normalize(kind, value)
        if normalized is None:
            report.problems.append({"row": row, "reason": f"not a usable {kind.replace('_', ' ')}"})
            continue
        hashed.setdefault((kind, identity_hash(kind, normalized)), []).append(row)
    found: dict[object, uuid.UUID] = {}
    with connection.cursor() as cursor:
        if hashed:
            kinds, hashes = zip(*hashed, strict=True)
            # Index: identity_kind_value_uniq (kind, value_hash); absorbed profiles resolve to the survivor.
            cursor.execute(
                "SELECT i.kind, i.value_hash, coalesce(p.merged_into_id, p.id) FROM profiles_identity i "
                "JOIN profiles_profile p ON p.id = i.profile_id JOIN unnest(%s::text[], %s::bytea[]) AS w(kind, h) "
                "ON i.kind = w.kind AND i.value_hash = w.h", [list(kinds), list(hashes)])
            for kind, value_hash, profile_id in cursor.fetchall():
                found[(kind, bytes(value_hash))] = profile_id
        if direct:
            cursor.execute("SELECT id, coalesce(merged_into_id, id) FROM profiles_profile WHERE id = ANY(%s)",
                           [list(direct)])
            for profile_id, target in cursor.fetchall():
                found[profile_id] = target
    members = set()
    for key, rows in [*hashed.items(), *direct.items()]:
        if key in found:
            members.add(found[key])
            report.matched += len(rows)
        else:
            report.problems.extend({"row": row, "reason": "no profile has this identifier"} for row in rows)
    report.problems.sort(key=lambda item: item["row"])
    return members


def static_members_replace(*, segment: Segment, actor, entries: list[tuple[int, str, str]],
                           mode: str = "replace") -> StaticUploadReport:
    """Set (mode=replace) or extend (mode=add) a static segment's members from identifiers.
    Unmatched rows are reported by row number and reason; matched ones are applied atomically."""
    if segment.kind != Segment.Kind.STATIC:
        raise SegmentError("not_static", "Only static segments take uploaded member lists.")
    if mode not in ("replace", "add"):
        raise SegmentError("invalid_mode", "mode must be replace or add.", field="mode")
    if not entries:
        raise SegmentError("empty_upload", "The upload holds no identifiers.")
    if len(entries) > MAX_ROWS:
        raise SegmentError("upload_too_large", f"At most {MAX_ROWS:,} rows per upload.")
    report = StaticUploadReport(rows=len(entries))
    members = _resolve(entries, report)
    began = time.monotonic()
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [segment_lock_key(segment.pk)])
        segment = Segment.objects.get(pk=segment.pk)
        eval_table_create(cursor)
        cursor.execute("INSERT INTO segments_eval SELECT DISTINCT unnest(%s::uuid[]), true, NULL::timestamptz", [sorted(members)])
        if mode == "add":
            cursor.execute("INSERT INTO segments_eval SELECT m.profile_id, true, NULL::timestamptz FROM segments_membership m "
                           "WHERE m.segment_id = %s AND m.version_to IS NULL AND NOT EXISTS "
                           "(SELECT 1 FROM segments_eval n WHERE n.profile_id = m.profile_id)", [segment.pk])
        version = segment.membership_version + 1
        report.size, report.entered, report.exited = apply_full(cursor, segment=segment, version=version, now=now,
                                                                cause=MembershipChange.Cause.STATIC)
        duration = int((time.monotonic() - began) * 1000)
        Segment.objects.filter(pk=segment.pk).update(membership_version=version, member_count=report.size,
                                                     status=Segment.Status.OK, computed_at=now, compute_duration_ms=duration,
                                                     last_error="", consecutive_failures=0)
        SegmentRun.objects.create(segment=segment, trigger="upload", requested_at=now, started_at=now,
                                  finished_at=timezone.now(), status=SegmentRun.Status.SUCCEEDED,
                                  requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                                  membership_version=version, size=report.size, entered=report.entered,
                                  exited=report.exited, duration_ms=duration, attempts=1)
        audit_record(actor=actor, action="segment.members_uploaded", object_type="segment", object_id=segment.key,
                     details={"rows": report.rows, "matched": report.matched, "unmatched": len(report.problems),
                              "mode": mode})
    from segments.lookup import lookup_cache_invalidate_recent
    from segments.tasks import membership_cleanup_task

    transaction.on_commit(lambda: membership_cleanup_task.delay(segment_id=segment.pk))
    lookup_cache_invalidate_recent(segment_id=segment.pk, changed=report.entered + report.exited)
    logger.info("static segment uploaded", extra={"segment_id": segment.pk, "rows": report.rows,
                                                  "matched": report.matched, "size": report.size})
    return report

