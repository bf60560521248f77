"""The enforcement API: the checks other apps call before they use personal data.

Every check fails closed: no decision recorded, an unknown purpose, an unknown profile — not
allowed. Reads only look at the current-consent tables (consent_profileconsent,
consent_subjectconsent, consent_subjectlink), never at the ledger.

- `profiles_allowed(profile_ids=..., purpose=...)`      which of N profiles may be used (one query)
- `consent_condition(profile_column=..., purposes=...)` a psycopg.sql condition to AND into a
  segment query (lookups, exports, recomputes)
- `identifier_sets_allowed(...)`                        consent of messages' identifiers (ingestion,
  before a profile may exist)
- `message_minimise(message, granted_purposes=...)`     field-level minimisation of a message
  (`minimisation_purposes()`: the purposes its rules depend on)
- `suppressed_identifiers(identifiers=...)`             erased people a later event / import must
  not recreate
- `identifiers_consent(identifiers=..., purposes=...)`  ingestion's one query per batch: the
  states and suppression entries of distinct identifiers; `set_consent` combines one message's
- merges: `consent.services.state.consent_profiles_merge` (a write, so it lives with the services)
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

import orjson
import psycopg
from django.db import connection
from psycopg import sql

from cdp import crypto
from consent import reference
from consent.models import MinimisationRule


def _purpose_id_or_none(purpose: str) -> int | None:
    info = reference.purposes().get(purpose)
    return info.id if info is not None and info.is_active else None


def profiles_allowed(*, profile_ids: Iterable, purpose: str) -> set[UUID]:
    """The profiles among `profile_ids` with `purpose` granted now (one index probe each)."""
    purpose_id = _purpose_id_or_none(purpose)
    ids = [str(p) for p in profile_ids]
    if purpose_id is None or not ids:
        return set()
    with connection.cursor() as cursor:
        # Index: profile_consent_purpose_idx (purpose_id, profile_id) WHERE granted.
        cursor.execute("SELECT profile_id FROM consent_profileconsent "
                       "WHERE purpose_id = %s AND granted AND profile_id = ANY(%s::uuid[])", [purpose_id, ids])
        return {row[0] for row in cursor.fetchall()}


def profile_purposes(*, profile_id) -> dict[str, bool]:
    """Every active purpose -> granted now, for one profile (missing decisions are False)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT purpose_id, granted FROM consent_profileconsent WHERE profile_id = %s",
                       [str(profile_id)])
        granted = dict(cursor.fetchall())
    return {key: bool(granted.get(info.id)) for key, info in reference.purposes().items() if info.is_active}


@dataclass(frozen=True)
class SqlCondition:
    """A boolean SQL expression with positional (%s) parameters, to AND into a query."""

    sql: sql.Composable
    params: tuple


def consent_condition(*, profile_column: sql.Composable, purposes: Sequence[str]) -> SqlCondition:
    """`profile_column` has every purpose in `purposes` granted now, e.g.

        condition = consent_condition(profile_column=sql.Identifier("p", "id"), purposes=["personalization"])
        query = sql.SQL("SELECT p.id FROM profiles_profile p WHERE {} AND {}").format(other.sql, condition.sql)
        cursor.execute(query, other.params + condition.params)

    An unknown or inactive purpose yields FALSE (fail closed); no purposes yields TRUE.
    """
    parts, params = [], []
    for purpose in purposes:
        purpose_id = _purpose_id_or_none(purpose)
        if purpose_id is None:
            return SqlCondition(sql.SQL("FALSE"), ())
        # Index: profile_consent_purpose_idx (purpose_id, profile_id) WHERE granted.
        parts.append(sql.SQL("EXISTS (SELECT 1 FROM consent_profileconsent cpc WHERE cpc.profile_id = {} "
                             "AND cpc.purpose_id = %s AND cpc.granted)").format(profile_column))
        params.append(purpose_id)
    if not parts:
        return SqlCondition(sql.SQL("TRUE"), ())
    return SqlCondition(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)), tuple(params))


_IDENTIFIER_STATES = """
WITH s(idx, kind, hash) AS (SELECT * FROM unnest(%(idx)s::int[], %(kinds)s::text[], %(hashes)s::bytea[])),
profiles AS (
    SELECT s.idx, l.profile_id FROM s
    JOIN consent_subjectlink l ON l.subject_hash = s.hash AND l.subject_kind = s.kind
    UNION
    SELECT s.idx, i.profile_id FROM s JOIN profiles_identity i ON i.kind = s.kind AND i.value_hash = s.hash
)
SELECT p.idx, pc.granted FROM profiles p
JOIN consent_profileconsent pc ON pc.profile_id = p.profile_id AND pc.purpose_id = %(purpose)s
UNION ALL
SELECT s.idx, c.granted FROM s
JOIN consent_subjectconsent c ON c.subject_hash = s.hash AND c.subject_kind = s.kind AND c.purpose_id = %(purpose)s
WHERE NOT EXISTS (SELECT 1 FROM consent_subjectlink l WHERE l.subject_hash = s.hash AND l.subject_kind = s.kind)
"""


def identifier_sets_allowed(*, identifier_sets: Sequence[Sequence[tuple[str, bytes]]], purpose: str) -> list[bool]:
    """For each set of (kind, keyed hash) identifiers (e.g. one message's anonymousId and userId):
    is `purpose` granted? Decisions of the profiles the identifiers belong to count, and of
    identifiers not yet linked to a profile; any withdrawal wins; nothing known is False."""
    purpose_id = _purpose_id_or_none(purpose)
    result = [False] * len(identifier_sets)
    flat = [(index, kind, bytes(digest)) for index, identifiers in enumerate(identifier_sets)
            for kind, digest in identifiers]
    if purpose_id is None or not flat:
        return result
    indexes, kinds, hashes = (list(column) for column in zip(*flat, strict=True))
    states: dict[int, set[bool]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_IDENTIFIER_STATES, {"idx": indexes, "kinds": kinds, "hashes": hashes, "purpose": purpose_id})
        for index, granted in cursor.fetchall():
            states.setdefault(index, set()).add(granted)
    for index, values in states.items():
        result[index] = values == {True}
    return result


def suppressed_identifiers(*, identifiers: Iterable[tuple[str, bytes]]) -> set[tuple[str, bytes]]:
    """The (kind, keyed hash) pairs that belong to erased people and were not lifted by new consent."""
    pairs = {(kind, bytes(digest)) for kind, digest in identifiers}
    if not pairs:
        return set()
    kinds, hashes = zip(*pairs, strict=True)
    with connection.cursor() as cursor:
        # Index: suppression_uniq (value_hash, kind).
        cursor.execute("SELECT s.kind, s.value_hash FROM consent_suppressionentry s "
                       "JOIN unnest(%s::text[], %s::bytea[]) AS q(kind, hash) ON s.value_hash = q.hash "
                       "AND s.kind = q.kind WHERE s.lifted_at IS NULL", [list(kinds), list(hashes)])
        return {(kind, bytes(digest)) for kind, digest in cursor.fetchall()}


def suppressed_identifiers_staged(cursor, *, table: str, kinds: Sequence[str]) -> set[tuple[str, bytes]]:
    """`suppressed_identifiers` for the identifiers of a table in the caller's transaction (columns
    `kind`, `hash`, e.g. an import's distinct identifiers): the check runs in the database, so a
    large file's millions of identifiers never travel to Python (fetching them all was most of a
    1 GB import's peak memory); only the suppressed pairs, normally none, come back."""
    # Index: suppression_uniq (value_hash, kind).
    cursor.execute(sql.SQL("SELECT DISTINCT s.kind, s.value_hash FROM {} q JOIN consent_suppressionentry s "
                           "ON s.value_hash = q.hash AND s.kind = q.kind "
                           "WHERE s.lifted_at IS NULL AND q.kind = ANY(%s)").format(sql.Identifier(table)),
                   [list(kinds)])
    return {(kind, bytes(digest)) for kind, digest in cursor.fetchall()}


# The states of distinct identifiers for some purposes, and their active suppression entries, in
# one round trip. Row kinds: 'p' a profile decision the identifier leads to (by SubjectLink or
# Identity), 's' the identifier's own decision when it is not linked to a profile (it counts),
# 'l' its own decision when it is linked (the profile's counts; callers comparing a subject's
# state need it), 'x' a suppression entry. Times as integer microseconds since the epoch, and
# decision times only for `dated` purposes: loading timestamptz values costs more in Python than
# the query itself. The identifiers travel as one bytea of 32-byte hashes and one comma-joined
# text of kinds (one value each to bind, instead of arrays converted element by element).
# Indexes: subject_link_uniq (subject_hash, subject_kind), identity_kind_value_uniq,
# profile_consent_uniq (profile_id, purpose_id), subject_consent_uniq (subject_hash,
# subject_kind, purpose_id), suppression_uniq (value_hash, kind).
_IDENTIFIERS_CONSENT = """
WITH s(pos, kind, hash) AS MATERIALIZED (
    SELECT g - 1, k.kinds[g], substring(%(hashes)s::bytea FROM (g - 1) * 32 + 1 FOR 32)
    FROM (SELECT string_to_array(%(kinds)s::text, ',') AS kinds) k, generate_series(1, %(count)s::int) g
),
linked AS (
    SELECT s.pos, l.profile_id FROM s JOIN consent_subjectlink l ON l.subject_hash = s.hash AND l.subject_kind = s.kind
),
profiles AS (
    SELECT pos, profile_id FROM linked
    UNION
    SELECT s.pos, i.profile_id FROM s JOIN profiles_identity i ON i.kind = s.kind AND i.value_hash = s.hash
)
SELECT p.pos, 'p', pc.purpose_id, pc.granted,
       CASE WHEN pc.purpose_id = ANY(%(dated)s) THEN (extract(epoch FROM pc.decided_at) * 1000000)::bigint END
FROM profiles p JOIN consent_profileconsent pc ON pc.profile_id = p.profile_id AND pc.purpose_id = ANY(%(purposes)s)
UNION ALL
SELECT s.pos, CASE WHEN EXISTS (SELECT 1 FROM linked WHERE linked.pos = s.pos) THEN 'l' ELSE 's' END,
       c.purpose_id, c.granted,
       CASE WHEN c.purpose_id = ANY(%(dated)s) THEN (extract(epoch FROM c.decided_at) * 1000000)::bigint END
FROM s JOIN consent_subjectconsent c
  ON c.subject_hash = s.hash AND c.subject_kind = s.kind AND c.purpose_id = ANY(%(subject_purposes)s)
UNION ALL
SELECT s.pos, 'x', NULL, NULL, (extract(epoch FROM e.created_at) * 1000000)::bigint FROM s
JOIN consent_suppressionentry e ON e.value_hash = s.hash AND e.kind = s.kind WHERE e.lifted_at IS NULL
"""
HASH_BYTES = 32


@dataclass(slots=True)
class IdentifierConsent:
    """One identifier: the decisions that count for its person (purpose key, granted, decided at
    in µs since the epoch for dated purposes), its own current decisions (`SubjectConsent`, linked
    or not), and since when (µs since the epoch) it is suppressed by an erasure, if it is."""

    decisions: list[tuple[str, bool, int | None]] = field(default_factory=list)
    own: dict[str, bool] = field(default_factory=dict)
    suppressed_since_us: int | None = None


@dataclass(frozen=True)
class SetConsent:
    """One message's identifiers together: the purposes granted (any withdrawal wins, nothing
    known is not granted, as `identifier_sets_allowed`), when the newest of those grants was
    decided (dated purposes, µs since the epoch), and the newest suppression entry among them."""

    granted: frozenset[str] = frozenset()
    granted_at_us: dict[str, int] = field(default_factory=dict)
    suppressed_since_us: int | None = None


def identifiers_consent(*, identifiers: Sequence[tuple[str, bytes]], purposes: Iterable[str],
                        own_purposes: Iterable[str] = (), dated: Iterable[str] = ()) -> list[IdentifierConsent]:
    """The consent of each distinct (kind, keyed hash): the decisions that count for `purposes`,
    its own decisions for `purposes` and `own_purposes` (one query)."""
    known = reference.purposes()
    ids = {known[key].id: key for key in purposes if key in known and known[key].is_active}
    names = {**{known[key].id: key for key in own_purposes if key in known and known[key].is_active}, **ids}
    found = [IdentifierConsent() for _ in identifiers]
    if not identifiers:
        return found
    hashes = b"".join(bytes(digest) for _, digest in identifiers)
    if len(hashes) != HASH_BYTES * len(identifiers):
        raise ValueError("identifier hashes must be 32-byte keyed hashes")
    params = {"hashes": hashes, "kinds": ",".join(kind for kind, _ in identifiers), "count": len(identifiers),
              "purposes": list(ids), "subject_purposes": list(names),
              "dated": [known[key].id for key in dated if key in known]}
    connection.ensure_connection()
    # Server-side binding. Not prepared: PostgreSQL's generic plan for it (row counts unknown)
    # was measured slower than planning it each time.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_IDENTIFIERS_CONSENT, params)
        rows = cursor.fetchall()
    for position, row_kind, purpose_id, granted, moment in rows:
        state = found[position]
        if row_kind == "x":
            state.suppressed_since_us = max(moment, state.suppressed_since_us or moment)
            continue
        if row_kind != "p":
            state.own[names[purpose_id]] = granted
        if row_kind != "l" and purpose_id in ids:
            state.decisions.append((ids[purpose_id], granted, moment))
    return found


def set_consent(states: Iterable[IdentifierConsent]) -> SetConsent:
    """Combine the identifiers of one message (see SetConsent)."""
    verdict: dict[str, bool] = {}
    granted_at: dict[str, int] = {}
    suppressed_since = None
    for state in states:
        if state.suppressed_since_us is not None:
            suppressed_since = max(state.suppressed_since_us, suppressed_since or state.suppressed_since_us)
        for purpose, granted, moment in state.decisions:
            verdict[purpose] = verdict.get(purpose, True) and granted
            if moment is not None and moment > granted_at.get(purpose, moment - 1):
                granted_at[purpose] = moment
    granted = frozenset(purpose for purpose, value in verdict.items() if value)
    return SetConsent(granted, {k: v for k, v in granted_at.items() if k in granted}, suppressed_since)

# -- field-level minimisation ------------------------------------------------------------------

@dataclass(frozen=True)
class _CompiledRule:
    event_name: str
    path: tuple[str, ...]
    action: str
    purpose: str


def _compiled_rules() -> dict[str, tuple[_CompiledRule, ...]]:
    def load():
        keys = reference.purpose_keys_by_id()
        compiled: dict[str, list[_CompiledRule]] = {}
        for rule in MinimisationRule.objects.filter(is_active=True).order_by("id"):
            path = tuple(part for part in rule.field_path.split(".") if part)
            if path:
                compiled.setdefault(rule.event_type or "*", []).append(
                    _CompiledRule(rule.event_name, path, rule.action, keys.get(rule.purpose_id, "")))
        return {event_type: tuple(rules) for event_type, rules in compiled.items()}
    return reference._cached("minimisation", load)


def minimisation_purposes() -> frozenset[str]:
    """The purposes active minimisation rules depend on (callers read only these states)."""
    return frozenset(rule.purpose for rules in _compiled_rules().values() for rule in rules)


def field_hash(path: Sequence[str], value) -> str:
    """The keyed hash that replaces a minimised field (stable, so counts and joins still work)."""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return "h:" + crypto.keyed_hash_hex("field:" + ".".join(path), text)


def _without(node: dict, path: Sequence[str], action: str, depth: int = 0) -> dict:
    """A copy of `node` with the field at `path[depth:]` dropped or hashed (only the path is copied)."""
    head = path[depth]
    if head not in node:
        return node
    copy = dict(node)
    if depth == len(path) - 1:
        if action == MinimisationRule.Action.HASH:
            copy[head] = field_hash(path, node[head])
        else:
            del copy[head]
        return copy
    child = node[head]
    if not isinstance(child, dict):
        return node
    copy[head] = _without(child, path, action, depth + 1)
    return copy


def message_minimise(message: dict, *, granted_purposes: Iterable[str]) -> dict:
    """Apply the minimisation rules of the message's type (and event name) for the purposes the
    person has NOT granted. Returns the message itself when nothing applies, else a copy; the
    input is never modified."""
    rules = _compiled_rules()
    event_type = message.get("type", "")
    applicable = rules.get(event_type, ()) + rules.get("*", ())
    if not applicable:
        return message
    granted = set(granted_purposes)
    name = message.get("event") or message.get("name") or ""
    result = message
    for rule in applicable:
        if rule.purpose in granted or (rule.event_name and rule.event_name != name):
            continue
        result = _without(result, rule.path, rule.action)
    return result
