"""The statements built around the compiler: one query per definition, three uses.

- `members_statement`: the profile ids in the segment (preview, dry-run diff, static checks).
  Joins are LEFT JOINs to per-profile aggregates; at the top level PostgreSQL reduces them to
  inner joins wherever the condition is strict, so selective segments stay cheap.
- `evaluation_statement`: (profile_id, is_member, next_change_at) for every profile that is a
  member or has a moment ahead at which its answer can change by time alone — the full
  recompute and the real-time check (restricted to given ids) both run it.
Base table: profiles_profile (primary key; `p.id = ANY(ids)` when restricted). Absorbed
profiles (merged_into set) never match, so they leave every segment on their next evaluation.
"""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db import connection
from psycopg import sql

from segments.evaluation.compiler import Compiler, Part


@dataclass
class Statement:
    query: sql.Composable
    params: dict

    def text(self) -> str:
        connection.ensure_connection()
        return self.query.as_string(connection.connection)

    def execute(self, cursor) -> None:
        cursor.execute(self.text(), self.params)


def _from(c: Compiler) -> sql.Composable:
    computed = sql.SQL(" LEFT JOIN profiles_computedtraits c ON c.profile_id = p.id") if c.uses_computed else sql.SQL("")
    return sql.SQL("FROM profiles_profile p{}{} WHERE p.merged_into_id IS NULL{}").format(
        computed, sql.SQL("").join(c.joins), c.restrict(sql.SQL("p.id")))


def _compiled(definition: dict, *, now: datetime, segment_ids: dict[str, int] | None,
              profile_ids: list[UUID] | None) -> tuple[Compiler, Part]:
    """The compiled root. Restricted to ids, when a top-level AND requires conditions on the
    profile row alone (a country, a device, a consent) and also reads aggregates, compile again
    so the aggregates read only the ids that pass those conditions: a few index probes instead
    of every event of every given profile (measured 19 ms -> 0.4 ms for 150 profiles)."""
    c = Compiler(now=now, profile_ids=profile_ids, segment_ids=segment_ids)
    root = c.part(definition["root"])
    if profile_ids is None or not c.joins or not root.required_profile:
        return c, root
    narrowed = Compiler(now=now, profile_ids=profile_ids, segment_ids=segment_ids, prefix="q",
                        candidates=sql.SQL(" AND ").join(root.required_profile))
    root = narrowed.part(definition["root"])
    narrowed.params.update(c.params)  # the candidate condition uses the first compilation's parameters
    return narrowed, root


def members_statement(definition: dict, *, now: datetime, segment_ids: dict[str, int] | None = None,
                      profile_ids: list[UUID] | None = None) -> Statement:
    """SELECT profile_id of the members (one parameterised query)."""
    c, root = _compiled(definition, now=now, segment_ids=segment_ids, profile_ids=profile_ids)
    query = sql.SQL("SELECT p.id AS profile_id {} AND {}").format(_from(c), root.predicate)
    return Statement(query, c.params)


def evaluation_statement(definition: dict, *, now: datetime, segment_ids: dict[str, int] | None = None,
                         profile_ids: list[UUID] | None = None) -> Statement:
    """SELECT profile_id, is_member, next_change_at for members and profiles with a timer."""
    c, root = _compiled(definition, now=now, segment_ids=segment_ids, profile_ids=profile_ids)
    predicate = root.predicate
    if root.timer is None:
        query = sql.SQL("SELECT p.id AS profile_id, true AS is_member, NULL::timestamptz AS next_change_at {} AND {}"
                        ).format(_from(c), predicate)
        return Statement(query, c.params)
    member = sql.SQL("coalesce({}, false)").format(predicate)
    # The earliest moment the answer as a whole can change (see compiler.compile_group).
    next_change = root.timer
    # Children of a top-level AND that every output row satisfies, filtered on directly so the
    # planner can reduce their LEFT JOINs to inner joins and push filters down.
    required = sql.SQL("").join(sql.SQL(" AND {}").format(item) for item in (root.required or []))
    query = sql.SQL("SELECT profile_id, is_member, next_change_at FROM (SELECT p.id AS profile_id, {} AS is_member, "
                    "{} AS next_change_at {}{}) s WHERE is_member OR next_change_at IS NOT NULL").format(
        member, next_change, _from(c), required)
    return Statement(query, c.params)
