"""Read queries of the profiles app (dashboard figures, explorer pages)."""

import contextlib
import uuid
from datetime import UTC, date, datetime, timedelta

from django.db import connection
from django.db.models import Count, Q

from profiles.identifiers import readable_value, search_candidates
from profiles.models import Event, Identity, Profile, Source, Transaction


def profile_count() -> int:
    """Live profiles (absorbed ones excluded)."""
    return Profile.objects.filter(merged_into__isnull=True).count()


def event_count_today() -> int:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Partition pruning keeps this to the current month; the BRIN index on timestamp narrows it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_event WHERE timestamp >= %s", [start])
        return cursor.fetchone()[0]


def events_per_day(*, days: int) -> list[tuple[date, int]]:
    """Event counts per UTC day for the last `days` days, zero-filled, oldest first."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (timestamp AT TIME ZONE 'UTC')::date AS day, count(*) FROM profiles_event "
            "WHERE timestamp >= %s GROUP BY 1",
            [datetime.combine(first, datetime.min.time(), tzinfo=UTC)],
        )
        counts = dict(cursor.fetchall())
    return [(first + timedelta(days=i), counts.get(first + timedelta(days=i), 0)) for i in range(days)]


def profile_search(*, query: str):
    """Profiles matching an identifier (exact, on keyed hashes) or a profile id."""
    query = query.strip()
    condition = Q()
    for kind, value_hash in search_candidates(query):
        condition |= Q(kind=kind, value_hash=value_hash)
    profile_ids = set()
    if condition:
        profile_ids.update(Identity.objects.filter(condition).values_list("profile_id", flat=True))
    with contextlib.suppress(ValueError):
        profile_ids.add(uuid.UUID(query))
    return Profile.objects.filter(id__in=profile_ids)


def profile_list_queryset(*, query: str = ""):
    base = profile_search(query=query) if query else Profile.objects.all()
    return base.filter(merged_into__isnull=True).order_by("-last_seen_at", "id")


def profile_identities(*, profile: Profile) -> list[dict]:
    return [
        {"kind": identity.get_kind_display(), "value": readable_value(identity),
         "first_seen_at": identity.first_seen_at, "last_seen_at": identity.last_seen_at}
        for identity in profile.identities.order_by("kind", "first_seen_at")
    ]


def profile_events(*, profile: Profile):
    return Event.objects.filter(profile_id=profile.id).order_by("-timestamp", "-id")


def profile_transactions(*, profile: Profile):
    return Transaction.objects.filter(profile=profile).prefetch_related("items").order_by("-timestamp")


def source_list_with_counts() -> list[Source]:
    """Sources with how many transactions each has brought (for the imports screen)."""
    counts = dict(Transaction.objects.values_list("source_id").annotate(n=Count("id")).order_by())
    sources = list(Source.objects.order_by("name"))
    for source in sources:
        source.transaction_count = counts.get(source.id, 0)
    return sources
