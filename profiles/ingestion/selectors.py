"""Read queries behind the Sources and Rejected events screens."""

from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from profiles.models import DroppedEventCount, RejectedEvent, Source, SourceKey

# Accepted volume comes from the dedupe table: one row per stored message, with its receipt
# time (BRIN eventdedupe_received_brin narrows to the window), so no scan of the events table.
_VOLUME_SQL = (
    "SELECT source_id, date_trunc('hour', first_received_at) AS hour, count(*) FROM profiles_eventdedupe "
    "WHERE first_received_at >= %s AND (%s::bigint IS NULL OR source_id = %s) GROUP BY 1, 2"
)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def source_overview_list() -> list[Source]:
    """Every source with its active keys, events stored, rejected and dropped (consent) in the
    last 24 hours (dropped counts are kept per hour: the current hour and the 23 before it)."""
    since = timezone.now() - timedelta(hours=24)
    sources = list(Source.objects.annotate(
        active_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True) & (
            Q(keys__expires_at__isnull=True) | Q(keys__expires_at__gt=timezone.now())))).order_by("name"))
    with connection.cursor() as cursor:
        cursor.execute(_VOLUME_SQL, [since, None, None])
        accepted: dict[int, int] = {}
        for source_id, _, count in cursor.fetchall():
            accepted[source_id] = accepted.get(source_id, 0) + count
    rejected = dict(RejectedEvent.objects.filter(received_at__gte=since, source__isnull=False)
                    .values_list("source_id").annotate(n=Count("id")).order_by())
    pending = dict(RejectedEvent.objects.filter(replayed_at__isnull=True, source__isnull=False)
                   .values_list("source_id").annotate(n=Count("id")).order_by())
    last_used = dict(SourceKey.objects.filter(last_used_at__isnull=False).values_list("source_id")
                     .annotate(last=Max("last_used_at")).order_by())
    # Unique index dropped_source_hour_uniq (source_id, hour, reason); the table holds counts only.
    dropped = dict(DroppedEventCount.objects.filter(hour__gt=since).values_list("source_id")
                   .annotate(n=Sum("count")).order_by())
    for source in sources:
        source.events_24h = accepted.get(source.id, 0)
        source.rejected_24h = rejected.get(source.id, 0)
        source.rejected_pending = pending.get(source.id, 0)
        source.last_used_at = last_used.get(source.id)
        source.dropped_24h = dropped.get(source.id, 0)
    return sources


def source_hourly_volume(*, source_id: int, hours: int = 48) -> list[dict]:
    """Stored, rejected and dropped (consent) messages per hour for the last `hours` hours,
    zero-filled, oldest first."""
    now = timezone.now()
    first = _hour(now) - timedelta(hours=hours - 1)
    with connection.cursor() as cursor:
        cursor.execute(_VOLUME_SQL, [first, source_id, source_id])
        accepted = {hour: count for _, hour, count in cursor.fetchall()}
    rejected_rows = (RejectedEvent.objects.filter(source_id=source_id, received_at__gte=first)
                     .values_list("received_at", flat=True))
    rejected: dict[datetime, int] = {}
    for received_at in rejected_rows.iterator():
        rejected[_hour(received_at)] = rejected.get(_hour(received_at), 0) + 1
    dropped: dict[datetime, int] = {}
    for hour, count in DroppedEventCount.objects.filter(source_id=source_id, hour__gte=first).values_list(
            "hour", "count"):
        dropped[hour] = dropped.get(hour, 0) + count
    series = []
    for index in range(hours):
        hour = first + timedelta(hours=index)
        series.append({"hour": hour, "accepted": accepted.get(hour, 0), "rejected": rejected.get(hour, 0),
                       "dropped": dropped.get(hour, 0)})
    return series


def source_dropped_reasons(*, source_id: int, hours: int = 48) -> list[tuple[str, int]]:
    """Events not kept for lack of consent in the last `hours` hours, per reason (label, count)."""
    first = _hour(timezone.now()) - timedelta(hours=hours - 1)
    labels = dict(DroppedEventCount.Reason.choices)
    rows = (DroppedEventCount.objects.filter(source_id=source_id, hour__gte=first).values_list("reason")
            .annotate(n=Sum("count")).order_by("-n", "reason"))
    return [(labels.get(reason, reason), count) for reason, count in rows]


def source_keys(*, source: Source) -> list[SourceKey]:
    keys = list(SourceKey.objects.filter(source=source).order_by("-created_at"))
    now = timezone.now()
    for key in keys:
        if key.revoked_at:
            key.state = "revoked"
        elif key.expires_at and key.expires_at <= now:
            key.state = "expired"
        elif key.expires_at:
            key.state = "expiring"
        else:
            key.state = "active"
    return keys


def rejected_reason_counts(*, source_id: int | None = None) -> list[tuple[str, int]]:
    """Pending rejections per reason code, most frequent first."""
    rows = RejectedEvent.objects.filter(replayed_at__isnull=True)
    if source_id:
        rows = rows.filter(source_id=source_id)
    return list(rows.values_list("reason").annotate(n=Count("id")).order_by("-n", "reason"))


def rejected_list(*, reason: str = "", source_id: int | None = None, status: str = "pending"):
    """Rejected events, newest first, filtered (status: pending, replayed or all)."""
    rows = RejectedEvent.objects.select_related("source").defer("payload", "raw_body")
    if reason:
        rows = rows.filter(reason=reason)
    if source_id:
        rows = rows.filter(source_id=source_id)
    if status == "pending":
        rows = rows.filter(replayed_at__isnull=True)
    elif status == "replayed":
        rows = rows.filter(replayed_at__isnull=False)
    return rows.order_by("-received_at", "-id")


def rejected_reasons() -> list[str]:
    return list(RejectedEvent.objects.values_list("reason", flat=True).distinct().order_by("reason"))
