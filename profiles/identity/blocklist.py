"""Blocked identifier values: placeholders that must never identify (and so never merge) anyone.

Tracking code often sends "undefined", "null", "0" or a QA address as an id; linking on them
would merge every visitor into one profile. A blocked identifier is dropped from its message
before linking; if nothing usable remains, the event is kept but attributed to nobody
(`UNATTRIBUTED`). Rows are staff-editable (the blocked-values screen); the defaults below are
created by migration 0005 and by `cdp.reference_data.reference_data_ensure`.

Exact rows match the normalised value case-insensitively; regex rows are searched
(`re.search`, case-insensitive) in it. A row with an empty kind applies to every kind.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from profiles.models import BlockedIdentifier

MAX_PATTERN_LENGTH = 200

# (kind or "" for any, match, value, note, active). Keep in step with migration 0005.
DEFAULTS = [
    *[("", "exact", value, "placeholder sent by tracking code", True) for value in (
        "", "null", "undefined", "none", "nil", "nan", "0", "-1", "anonymous", "anon", "unknown", "guest",
        "test", "n/a", "na", "[object object]", "true", "false", "00000000-0000-0000-0000-000000000000")],
    *[("email", "exact", value, "test or placeholder address", True) for value in (
        "test@test.com", "test@example.com", "example@example.com", "email@example.com", "user@example.com",
        "noemail@noemail.com", "no@email.com", "none@none.com", "abc@abc.com", "a@a.com")],
    # Off by default: the demo data's addresses use these reserved domains. Turn it on in production.
    ("email", "regex", r"@(example\.(com|org|net)|[^@]*\.(test|invalid|example|localhost))$",
     "reserved example domains (RFC 2606); off by default, the demo data uses them", False),
    ("", "regex", r"^0+$", "all zeros", True),
    ("", "regex", r"^(.)\1{5,}$", "one character repeated (aaaaaa, 1111111)", True),
    ("phone", "regex", r"^\+\d{1,3}0{6,}$", "national number all zeros", True),
]


def pattern_error(match: str, value: str) -> str | None:
    """Why a blocked value cannot be saved, or None."""
    if len(value) > MAX_PATTERN_LENGTH:
        return f"At most {MAX_PATTERN_LENGTH} characters."
    if match == BlockedIdentifier.Match.REGEX:
        if not value:
            return "A regular expression cannot be empty."
        try:
            re.compile(value)
        except re.error as exc:
            return f"Not a valid regular expression: {exc}."
    return None


@dataclass
class Blocklist:
    """Active rows, compiled. `hits` counts matches by row id until `record_hits` saves them."""

    exact: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind or "", lowered value) -> row id
    patterns: list[tuple[str, re.Pattern, int]] = field(default_factory=list)  # (kind or "", regex, row id)
    hits: Counter = field(default_factory=Counter)

    def match(self, kind: str, value: str) -> int | None:
        """The id of the row blocking this normalised value, or None."""
        lowered = value.lower()
        row = self.exact.get((kind, lowered)) or self.exact.get(("", lowered))
        if row is None:
            for row_kind, pattern, row_id in self.patterns:
                if (not row_kind or row_kind == kind) and pattern.search(value):
                    return row_id
        return row

    def blocked(self, kind: str, value: str) -> bool:
        row = self.match(kind, value)
        if row is not None:
            self.hits[row] += 1
        return row is not None

    def record_hits(self) -> None:
        """Add the counted hits to the rows (one UPDATE per row that matched)."""
        now = timezone.now()
        for row_id, count in self.hits.items():
            BlockedIdentifier.objects.filter(id=row_id).update(hits=F("hits") + count, last_hit_at=now)
        self.hits.clear()


def blocklist_load() -> Blocklist:
    """The active blocked values, ready to match."""
    result = Blocklist()
    for row_id, kind, match, value in BlockedIdentifier.objects.filter(is_active=True).values_list(
            "id", "kind", "match", "value"):
        if match == BlockedIdentifier.Match.EXACT:
            result.exact[(kind, value.strip().lower())] = row_id
        else:
            try:
                result.patterns.append((kind, re.compile(value, re.IGNORECASE), row_id))
            except re.error:
                continue  # saved through the admin without validation: ignore, never crash resolution
    return result


@transaction.atomic
def blocked_identifiers_ensure_defaults() -> int:
    """Create missing default rows (never changes existing ones); return how many were created."""
    created = 0
    for kind, match, value, note, active in DEFAULTS:
        _, was_created = BlockedIdentifier.objects.get_or_create(
            kind=kind, match=match, value=value, defaults={"note": note, "is_default": True, "is_active": active})
        created += was_created
    return created
