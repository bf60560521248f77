"""Consent in segments: which purposes exist, what a segment requires, and the SQL to check it.

Every check goes through `consent.enforcement` (fail closed: an unknown or inactive purpose is
never granted). Segments read consent at read time — lookups, exports, webhooks — so membership
itself stays true to the rules; a `consent` condition in a definition is the way to make consent
part of membership.
"""

import re
from collections.abc import Iterable, Sequence
from uuid import UUID

from psycopg import sql

from consent import reference
from consent.enforcement import SqlCondition, consent_condition, profiles_allowed
from segments.errors import SegmentError

# Lookups answer only for people who granted personalization (issue 6, "Enforcement").
LOOKUP_PURPOSES = ("personalization",)
MAX_REQUIRED = 10
PURPOSE_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,59}$")  # consent.Purpose.key is a slug


def purpose_choices() -> list[dict]:
    """Active purposes for pickers: key and name."""
    return [{"value": info.key, "label": info.name} for info in sorted(reference.purposes().values(),
                                                                        key=lambda info: info.key)
            if info.is_active]


def purposes_check(value, *, field: str = "required_purposes") -> list[str]:
    """A clean list of active purpose keys (sorted, unique), or SegmentError 400 naming the problem."""
    if value in (None, ""):
        return []
    if not isinstance(value, list | tuple) or len(value) > MAX_REQUIRED:
        raise SegmentError("invalid_purposes", f"{field} must be a list of at most {MAX_REQUIRED} purpose keys.",
                           field=field)
    known = {item["value"] for item in purpose_choices()}
    for item in value:
        if not isinstance(item, str) or not PURPOSE_KEY_RE.match(item):
            raise SegmentError("invalid_purposes", f"{field} must hold purpose keys such as email_marketing.",
                               field=field)
        if item not in known:
            raise SegmentError("unknown_purpose", f"Unknown or inactive purpose {item!r}; known purposes: "
                                                  f"{', '.join(sorted(known))}.", field=field)
    return sorted(set(value))


def named(condition: SqlCondition, *, placeholder) -> sql.Composable:
    """`condition` with its positional %s placeholders replaced by `placeholder(value)` (the
    compiler binds named parameters; consent.enforcement returns positional ones)."""
    text = condition.sql.as_string(None)
    pieces = text.split("%s")
    if "%%" in text or len(pieces) != len(condition.params) + 1:
        raise ValueError("a consent condition with unexpected placeholders")
    parts: list[sql.Composable] = [sql.SQL(pieces[0])]
    for value, piece in zip(condition.params, pieces[1:], strict=True):
        parts += [placeholder(value), sql.SQL(piece)]
    return sql.Composed(parts)


def segment_purposes_condition(*, profile_column: sql.Composable, segment_column: sql.Composable) -> SqlCondition:
    """The profile has granted every purpose in the segment's `required_purposes` array (for
    queries over many segments, e.g. lookups). Unknown or inactive keys never pass."""
    keys = [item["value"] for item in purpose_choices()]
    parts = [sql.SQL("{} <@ %s::varchar[]").format(segment_column)]
    params: list = [keys]
    for key in keys:
        granted = consent_condition(profile_column=profile_column, purposes=[key])
        parts.append(sql.SQL("(NOT (%s = ANY({})) OR {})").format(segment_column, granted.sql))
        params += [key, *granted.params]
    return SqlCondition(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)), tuple(params))


def profiles_with_purposes(*, profile_ids: Iterable, purposes: Sequence[str]) -> set[UUID]:
    """The profiles among `profile_ids` that granted every purpose (one query per purpose)."""
    allowed = {UUID(str(profile_id)) for profile_id in profile_ids}
    for purpose in purposes:
        if not allowed:
            break
        allowed &= profiles_allowed(profile_ids=allowed, purpose=purpose)
    return allowed
