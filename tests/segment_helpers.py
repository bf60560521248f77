"""Building small worlds of people with known behaviour for the segment tests.

Everything is placed relative to a fixed `now`, so window edges (7 days minus a second, plus a
second) are exact.
"""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from profiles.identifiers import identity_hash, normalize, stored_value
from profiles.models import ComputedTraits, Event, Identity, Profile, Source, Transaction, TransactionItem
from segments.evaluation import evaluation_statement, members_statement, validate

NOW = datetime(2026, 11, 20, 18, 0, 0, tzinfo=UTC)


def definition(root: dict) -> dict:
    return {"version": 1, "root": root}


class World:
    def __init__(self, now: datetime = NOW):
        self.now = now
        self.source, _ = Source.objects.get_or_create(name="Test shop")
        self._orders = 0

    def profile(self, **fields) -> uuid.UUID:
        fields.setdefault("last_seen_at", self.now - timedelta(days=1))
        return Profile.objects.create(**fields).id

    def event(self, profile_id, name: str, ago: timedelta, *, properties=None, context=None, type="track",
              received_ago: timedelta | None = None) -> Event:
        when = self.now - ago
        return Event.objects.create(
            timestamp=when, received_at=self.now - (received_ago if received_ago is not None else ago),
            source=self.source, profile_id=profile_id, message_id=str(uuid.uuid4()), type=type, name=name,
            properties=properties or {}, context=context or {})

    def events(self, profile_id, name: str, agos, **kwargs) -> None:
        for ago in agos:
            self.event(profile_id, name, ago, **kwargs)

    def order(self, profile_id, amount, ago: timedelta, categories=("shoes",)) -> Transaction:
        self._orders += 1
        order = Transaction.objects.create(source=self.source, order_id=f"T-{uuid.uuid4()}", profile_id=profile_id,
                                           amount=Decimal(str(amount)), currency="EUR", timestamp=self.now - ago)
        for category in categories:
            TransactionItem.objects.create(transaction=order, product_sku=f"sku-{category}", category=category,
                                           price=Decimal(str(amount)) / len(categories))
        return order

    def computed(self, profile_id, **fields) -> None:
        ComputedTraits.objects.create(profile_id=profile_id, **fields)

    def consent(self, profile_id, **purposes: bool) -> None:
        """Record the person's decisions (purpose key -> granted) through the consent services."""
        from consent.services import inputs

        inputs.consent_record(inputs.ConsentRequest(subject=inputs.subject_for_profile(profile_id),
                                                    purposes=purposes))

    def identity(self, profile_id, kind: str, value: str) -> None:
        normalized = normalize(kind, value)
        Identity.objects.create(profile_id=profile_id, kind=kind, value_hash=identity_hash(kind, normalized),
                                value=stored_value(kind, normalized), source=self.source,
                                first_seen_at=self.now, last_seen_at=self.now)


def members(root_or_definition: dict, *, now: datetime = NOW, segment_ids=None, profile_ids=None) -> set:
    """Run the compiled members query and return the set of profile ids."""
    from django.db import connection

    full = root_or_definition if "root" in root_or_definition else definition(root_or_definition)
    validate(full)
    statement = members_statement(full, now=now, segment_ids=segment_ids, profile_ids=profile_ids)
    with connection.cursor() as cursor:
        statement.execute(cursor)
        return {row[0] for row in cursor.fetchall()}


def evaluation(root: dict, *, now: datetime = NOW, profile_ids=None, segment_ids=None) -> dict:
    """profile_id -> (is_member, next_change_at) from the evaluation query."""
    from django.db import connection

    full = root if "root" in root else definition(root)
    validate(full)
    statement = evaluation_statement(full, now=now, profile_ids=profile_ids, segment_ids=segment_ids)
    with connection.cursor() as cursor:
        statement.execute(cursor)
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


def ago(**kwargs) -> timedelta:
    return timedelta(**kwargs)
