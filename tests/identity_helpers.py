"""Helpers for identity-resolution tests: unresolved events shaped exactly as ingestion stores
them (profile_id NULL; see the storage contract in docs/architecture.md), and small readers."""

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from django.db import connection

from profiles.identity.resolve import identity_resolve_batch
from profiles.models import Event, Profile, Source, Transaction

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
_clock = itertools.count()


def event_insert(*, source: Source, type: str = "track", name: str = "", anonymous_id: str = "", user_id: str = "",
                 previous_id: str = "", group_id: str = "", traits: dict | None = None, properties: dict | None = None,
                 context: dict | None = None, timestamp: datetime | None = None) -> int:
    """Insert one unresolved event (as ingestion would) and return its id."""
    tick = next(_clock)
    timestamp = timestamp or T0 + timedelta(minutes=tick)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO profiles_event (timestamp, original_timestamp, sent_at, received_at, source_id, profile_id, "
            "message_id, type, name, category, anonymous_id, user_id, group_id, previous_id, properties, traits, "
            "context, extra) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s, %s, '', %s, %s, %s, %s, %s, %s, %s, '{}') "
            "RETURNING id",
            [timestamp, timestamp.isoformat(), timestamp, datetime.now(UTC) + timedelta(microseconds=tick),
             source.id, str(uuid.uuid4()), type, name, anonymous_id, user_id, group_id, previous_id,
             orjson.dumps(properties or {}).decode(), orjson.dumps(traits or {}).decode(),
             orjson.dumps(context or {}).decode()])
        return cursor.fetchone()[0]


def order_insert(*, source: Source, order_id: str, anonymous_id: str = "", user_id: str = "", amount: str = "10.00",
                 timestamp: datetime | None = None) -> tuple[int, Transaction]:
    """An order as ingestion stores it: the order_completed event and its unattached transaction."""
    timestamp = timestamp or T0 + timedelta(minutes=next(_clock))
    event_id = event_insert(source=source, type="track", name="Order Completed", anonymous_id=anonymous_id,
                            user_id=user_id, properties={"order_id": order_id, "total": float(amount)},
                            timestamp=timestamp)
    transaction = Transaction.objects.create(source=source, order_id=order_id, profile=None, amount=amount,
                                             currency="EUR", timestamp=timestamp)
    return event_id, transaction


def resolve_all() -> int:
    """Run the resolver until nothing is pending; return how many events it attached."""
    total = 0
    while True:
        result = identity_resolve_batch(limit=1000)
        total += result.events
        if result.events < 1000:
            return total


def profile_of_event(event_id: int):
    return Event.objects.filter(id=event_id).values_list("profile_id", flat=True).get()


def event_placement() -> dict:
    """{event id: profile id} for every event."""
    return dict(Event.objects.values_list("id", "profile_id"))


def live_profiles() -> list:
    return list(Profile.objects.filter(merged_into__isnull=True).order_by("created_at", "id"))
