"""Normalisation and hashing of identifiers: one place, used by ingestion, imports and search.

Emails are trimmed and lower-cased; phones become E.164 (numbers without a country code are
read in CDP_DEFAULT_PHONE_REGION); other identifiers are trimmed. Values that are well-formed
but meaningless (empty, "null", "undefined", "0", ...) are treated as absent.
"""

import re

import phonenumbers
from django.conf import settings

from cdp import crypto
from profiles.models import Identity

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_IDENTIFIER_LENGTH = 200


def normalize_email(raw: str) -> str | None:
    value = str(raw).strip().lower()
    return value if EMAIL_RE.match(value) and len(value) <= MAX_IDENTIFIER_LENGTH else None


def normalize_phone(raw: str, region: str | None = None) -> str | None:
    text = str(raw).strip()
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region or getattr(settings, "CDP_DEFAULT_PHONE_REGION", None) or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize(kind: str, raw) -> str | None:
    """The normalised form of an identifier, or None when it is unusable."""
    if raw is None:
        return None
    if kind == Identity.Kind.EMAIL:
        return normalize_email(raw)
    if kind == Identity.Kind.PHONE:
        return normalize_phone(raw)
    value = str(raw).strip()
    return value if value and len(value) <= MAX_IDENTIFIER_LENGTH else None


def identity_hash(kind: str, normalized_value: str) -> bytes:
    return crypto.keyed_hash(kind, normalized_value)


def stored_value(kind: str, normalized_value: str) -> str:
    """What goes into Identity.value: ciphertext for personal kinds, the value otherwise."""
    if kind in Identity.PERSONAL_KINDS:
        return crypto.encrypt(normalized_value)
    return normalized_value


def readable_value(identity: Identity) -> str:
    if identity.kind in Identity.PERSONAL_KINDS:
        return crypto.decrypt(identity.value)
    return identity.value


def search_candidates(query: str) -> list[tuple[str, bytes]]:
    """(kind, hash) pairs a free-text search may mean: an email, a phone, or any id."""
    query = query.strip()
    candidates = []
    email = normalize_email(query)
    if email:
        candidates.append((Identity.Kind.EMAIL, identity_hash(Identity.Kind.EMAIL, email)))
    phone = normalize_phone(query)
    if phone:
        candidates.append((Identity.Kind.PHONE, identity_hash(Identity.Kind.PHONE, phone)))
    for kind in (Identity.Kind.USER_ID, Identity.Kind.ANONYMOUS_ID, Identity.Kind.CRM_ID, Identity.Kind.DEVICE_ID):
        value = normalize(kind, query)
        if value:
            candidates.append((kind, identity_hash(kind, value)))
    return candidates
