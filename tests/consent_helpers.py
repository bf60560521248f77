"""Helpers for the consent tests: people with identities, decisions through the real services."""

import uuid
from datetime import UTC, datetime

from django.db import connection

from cdp import crypto
from consent.services import inputs
from profiles.identifiers import identity_hash, normalize, stored_value
from profiles.models import Identity, Profile, Source


def make_person(*, email: str | None = None, phone: str | None = None, user_id: str | None = None,
                anonymous_id: str | None = None, first_name: str = "Ada", last_name: str = "Lovelace",
                **fields) -> Profile:
    """A profile with the given identifiers, written the way identity resolution writes them."""
    profile = Profile.objects.create(first_name=first_name, last_name=last_name, **fields)
    now = datetime.now(UTC)
    for kind, raw in (("email", email), ("phone", phone), ("user_id", user_id), ("anonymous_id", anonymous_id)):
        if raw:
            value = normalize(kind, raw)
            Identity.objects.create(profile=profile, kind=kind, value_hash=identity_hash(kind, value),
                                    value=stored_value(kind, value), first_seen_at=now, last_seen_at=now)
    return profile


def decide(kind: str, value: str, purposes: dict, **options):
    """Record a decision through the API service (no HTTP)."""
    return inputs.consent_record(inputs.ConsentRequest(subject=inputs.subject_from_identifier(kind, value),
                                                       purposes=purposes, **options))


def decide_for_profile(profile, purposes: dict, **options):
    return inputs.consent_record(inputs.ConsentRequest(subject=inputs.subject_for_profile(profile.id),
                                                       purposes=purposes, **options))


def source(name: str = "Shop") -> Source:
    return Source.objects.get_or_create(name=name, defaults={"kind": Source.Kind.WEBSITE})[0]


def superuser_sql(statement: str, params=()) -> None:
    """Run SQL with triggers (and FK checks) off, as a database superuser could: what the
    tamper-evidence tests simulate."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(statement, params)
        finally:
            cursor.execute("SET session_replication_role = origin")


def hash_of(kind: str, value: str) -> bytes:
    return crypto.keyed_hash(kind, normalize(kind, value))


def new_uuid() -> str:
    return str(uuid.uuid4())
