"""Identify traits -> profile fields, and the precedence rule when values compete.

Precedence (documented in docs/architecture.md): for each trait, the newest non-empty value
wins, unless the current value came from an authoritative source (Source.is_authoritative,
e.g. the CRM) and the new one does not; an authoritative value replaces anything. A value
whose origin is unknown (loaded before resolution kept provenance) loses to any dated value.

Direct identifiers never land in the plaintext `Profile.traits`: email and phone become
identities (encrypted), names go to the encrypted name columns, `address` is reduced to city /
country / postcode; the event itself keeps the full traits it was sent with.
"""

import logging
from dataclasses import dataclass, field
from datetime import date, datetime

from django.utils.dateparse import parse_date, parse_datetime

logger = logging.getLogger(__name__)

TYPED = ("first_name", "last_name", "birth_year", "age", "gender", "country", "city", "postcode", "income_band",
         "language", "occupation")
SEEN = ("first_seen_at", "last_seen_at", "last_device_type", "last_os", "last_browser")
TRAITS_PREFIX = "traits."
# Keys that identify a person directly: kept on the event, never copied into Profile.traits.
NOT_COPIED = frozenset({"email", "phone", "firstname", "first_name", "lastname", "last_name", "name", "address",
                        "birthday", "username", "avatar", "password", "ssn", "id", "userid", "user_id"})
ALIASES = {
    "first_name": ("firstName", "first_name"), "last_name": ("lastName", "last_name"),
    "gender": ("gender",), "income_band": ("income_band", "incomeBand"), "occupation": ("occupation", "title"),
    "language": ("language",), "age": ("age",),
}
LIMITS = {"first_name": 200, "last_name": 200, "gender": 20, "country": 2, "city": 120, "postcode": 20,
          "income_band": 20, "language": 10, "occupation": 80}


def is_empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _text(name: str, value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    return text if text and len(text) <= LIMITS[name] else None


def _int(value, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _birth_year(value) -> int | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        parsed = parse_datetime(value) or parse_date(value[:10])
    except ValueError:  # well-formed but impossible, e.g. 1990-02-31
        return None
    return parsed.year if isinstance(parsed, date | datetime) and 1900 <= parsed.year <= 2100 else None


def observations(traits: dict) -> dict:
    """The profile fields an identify call's traits set: {typed column or traits.<key>: value}.

    Unusable values (wrong type, out of range, too long) are skipped, never stored half-right.
    """
    if not isinstance(traits, dict):
        return {}
    found = {}
    for column, keys in ALIASES.items():
        for key in keys:
            if key in traits:
                value = _int(traits[key], 0, 130) if column == "age" else _text(column, traits[key])
                if value is not None:
                    found[column] = value.lower() if column == "gender" else value
                break
    if "first_name" not in found and "last_name" not in found and isinstance(traits.get("name"), str):
        first, _, last = traits["name"].strip().partition(" ")
        if first and len(first) <= 200:
            found["first_name"] = first
        if last.strip() and len(last) <= 200:
            found["last_name"] = last.strip()
    address = traits.get("address") if isinstance(traits.get("address"), dict) else {}
    for column, keys in (("city", ("city",)), ("country", ("country",)),
                         ("postcode", ("postalCode", "postal_code", "postcode", "zip"))):
        raw = next((source[key] for source in (address, traits) for key in keys if key in source), None)
        value = _text(column, raw) if raw is not None else None
        if value is not None:
            found[column] = value.upper() if column == "country" else value
    if "country" in found and not found["country"].isalpha():
        del found["country"]
    year = _birth_year(traits.get("birthday"))
    if year:
        found["birth_year"] = year
    for key, value in traits.items():
        if key.lower() not in NOT_COPIED and key not in _TYPED_KEYS and len(key) <= 100:
            found[TRAITS_PREFIX + key] = value
    return found


_TYPED_KEYS = frozenset({key for keys in ALIASES.values() for key in keys} | {"city", "country", "postalCode",
                                                                             "postal_code", "postcode", "zip"})


@dataclass
class Provenance:
    observed_at: datetime | None
    source_id: int | None
    authoritative: bool

    def beats(self, current: "Provenance | None") -> bool:
        """The precedence rule: should a non-empty value with this provenance replace `current`?"""
        if current is None:
            return True
        if current.authoritative != self.authoritative:
            return self.authoritative
        if self.observed_at is None:
            return False
        return current.observed_at is None or self.observed_at >= current.observed_at


@dataclass
class ProfileState:
    """A profile's trait values with their provenance, as the fold sees them (names decrypted)."""

    profile_id: object
    values: dict = field(default_factory=dict)  # typed column or traits.<key> -> value
    sources: dict = field(default_factory=dict)  # same keys -> Provenance
    seen: dict = field(default_factory=dict)  # SEEN columns
    changed: set = field(default_factory=set)

    def offer(self, name: str, value, provenance: Provenance) -> None:
        if is_empty(value):
            return
        current = self.sources.get(name)
        if name not in self.values or is_empty(self.values[name]):
            current = None
        if provenance.beats(current):
            if self.values.get(name) != value or name not in self.sources:
                self.changed.add(name)
            self.values[name] = value
            self.sources[name] = provenance

    def absorb(self, other: "ProfileState") -> None:
        """Fold another profile's values in (a merge), by the same precedence rule."""
        for name, value in other.values.items():
            self.offer(name, value, other.sources.get(name) or Provenance(None, None, False))
        self.absorb_seen(other.seen)

    def absorb_seen(self, seen: dict) -> None:
        first, last = seen.get("first_seen_at"), seen.get("last_seen_at")
        if first and (not self.seen.get("first_seen_at") or first < self.seen["first_seen_at"]):
            self.seen["first_seen_at"] = first
        if last and (not self.seen.get("last_seen_at") or last > self.seen["last_seen_at"]):
            self.seen["last_seen_at"] = last
            for column in ("last_device_type", "last_os", "last_browser"):
                if seen.get(column):
                    self.seen[column] = seen[column]

    def trait_names(self) -> set[str]:
        return {name.removeprefix(TRAITS_PREFIX) for name in self.changed}

    def to_snapshot(self) -> dict:
        return {"values": dict(self.values), "seen": {k: v.isoformat() if isinstance(v, datetime) else v
                                                for k, v in self.seen.items()},
                "sources": {name: [p.observed_at.isoformat() if p.observed_at else None, p.source_id,
                                   p.authoritative] for name, p in self.sources.items()}}

    @classmethod
    def from_snapshot(cls, profile_id, data: dict) -> "ProfileState":
        state = cls(profile_id, values=dict(data.get("values", {})))
        state.seen = {k: parse_datetime(v) if k.endswith("_at") and v else v for k, v in data.get("seen", {}).items()}
        state.sources = {name: Provenance(parse_datetime(at) if at else None, source_id, bool(authoritative))
                         for name, (at, source_id, authoritative) in data.get("sources", {}).items()}
        state.changed = set(state.values)
        return state
