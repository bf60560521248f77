"""Computed traits from purchases: orders, spend, first/last purchase, tenure, favourite
category, and RFM with the buy-till-you-die conventions (docs/rfm.md).

One set-based pass: aggregate `profiles_transaction` per profile and per purchase day into a
temporary table, score R/F/M against the population's quintile breakpoints, then upsert
`profiles_computedtraits`. Incremental refreshes do the same for a list of profiles and score
them against the breakpoints of everyone else's current values.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from psycopg import sql

logger = logging.getLogger(__name__)

# (R scores, F scores) -> segment; first match wins. See docs/rfm.md for the grid.
SEGMENT_RULES = [
    ("champions", (4, 5), (4, 5)),
    ("loyal", (3, 3), (4, 5)),
    ("new", (4, 5), (1, 1)),
    ("potential loyalist", (3, 5), (2, 3)),
    ("hibernating", (2, 3), (1, 2)),
    ("at risk", (2, 2), (3, 5)),
    ("can't lose", (1, 1), (4, 5)),
    ("lost", (1, 1), (1, 3)),
]
COLUMNS = ["order_count", "total_spent", "average_order_value", "first_purchase_at", "last_purchase_at",
           "favourite_category", "rfm_frequency", "rfm_recency", "rfm_t", "rfm_monetary_value", "tenure_days",
           "rfm_as_of", "r_score", "f_score", "m_score", "rfm_segment"]


@dataclass
class RefreshResult:
    profiles: int
    seconds: float


def _segment_case() -> sql.Composable:
    branches = [sql.SQL("WHEN r_score BETWEEN {} AND {} AND f_score BETWEEN {} AND {} THEN {}").format(
        sql.Literal(r[0]), sql.Literal(r[1]), sql.Literal(f[0]), sql.Literal(f[1]), sql.Literal(name))
        for name, r, f in SEGMENT_RULES]
    return sql.SQL("CASE {} ELSE '' END").format(sql.SQL(" ").join(branches))


def _aggregate(cursor, *, profile_ids: list[str] | None, as_of: date) -> None:
    """Fill temp table traits_new with one row per profile that has purchases up to `as_of`.

    One pass over the orders grouped by (profile, UTC day) gives everything but the favourite
    category: orders, spend, first/last order, and the BTYD figures from the purchase days.
    """
    only = sql.SQL("AND profile_id = ANY(%(ids)s::uuid[])") if profile_ids is not None else sql.SQL("")
    only_t = sql.SQL("AND t.profile_id = ANY(%(ids)s::uuid[])") if profile_ids is not None else sql.SQL("")
    # Index transaction_profile_ts_idx (profile_id, timestamp) serves the incremental case.
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE traits_new ON COMMIT DROP AS
        WITH days AS (
            SELECT profile_id, (timestamp AT TIME ZONE 'UTC')::date AS day, count(*) AS orders, sum(amount) AS value,
                   min(timestamp) AS first_at, max(timestamp) AS last_at
            FROM profiles_transaction
            WHERE profile_id IS NOT NULL AND timestamp < %(end)s {only}
            GROUP BY 1, 2),
        per_profile AS (
            SELECT profile_id, sum(orders)::int AS order_count, sum(value) AS total_spent, min(first_at) AS first_at,
                   max(last_at) AS last_at, count(*) - 1 AS frequency, max(day) - min(day) AS recency,
                   %(as_of)s::date - min(day) AS t, (array_agg(value ORDER BY day))[1] AS first_day_value
            FROM days GROUP BY profile_id),
        favourite AS (
            SELECT t.profile_id, mode() WITHIN GROUP (ORDER BY i.category) AS category
            FROM profiles_transactionitem i JOIN profiles_transaction t ON t.id = i.transaction_id
            WHERE i.category <> '' AND t.profile_id IS NOT NULL AND t.timestamp < %(end)s {only_t}
            GROUP BY t.profile_id)
        SELECT p.profile_id, p.order_count, p.total_spent,
               round(p.total_spent / p.order_count, 2) AS average_order_value,
               p.first_at AS first_purchase_at, p.last_at AS last_purchase_at,
               coalesce(f.category, '') AS favourite_category, p.frequency AS rfm_frequency,
               p.recency::float8 AS rfm_recency, p.t::float8 AS rfm_t,
               round(coalesce((p.total_spent - p.first_day_value) / nullif(p.frequency, 0), 0), 2) AS rfm_monetary_value,
               p.t AS tenure_days, %(as_of)s::date AS rfm_as_of
        FROM per_profile p LEFT JOIN favourite f USING (profile_id)
    """).format(only=only, only_t=only_t), {"ids": profile_ids, "as_of": as_of,
                                           "end": datetime.combine(as_of, datetime.min.time(), tzinfo=UTC)
                                           + timedelta(days=1)})
    cursor.execute("ALTER TABLE traits_new ADD PRIMARY KEY (profile_id)")
    cursor.execute("ANALYZE traits_new")


def _breakpoints(cursor, *, incremental: bool) -> tuple[list, list, list]:
    """20/40/60/80 % percentiles of days idle, order count and spend over everyone with purchases."""
    population = ("""SELECT rfm_t - rfm_recency AS idle, order_count, total_spent FROM traits_new
                     UNION ALL SELECT c.rfm_t - c.rfm_recency, c.order_count, c.total_spent
                     FROM profiles_computedtraits c WHERE c.order_count > 0
                     AND NOT EXISTS (SELECT 1 FROM traits_new n WHERE n.profile_id = c.profile_id)"""
                  if incremental else "SELECT rfm_t - rfm_recency AS idle, order_count, total_spent FROM traits_new")
    cursor.execute(sql.SQL("""
        SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY idle),
               percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY order_count),
               percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY total_spent)
        FROM ({population}) p""").format(population=sql.SQL(population)))
    return cursor.fetchone()


def _scored_select() -> sql.Composable:
    """traits_new with R/F/M scores (a value above k breakpoints scores 1 + k) and the segment."""
    def above(expression: str, name: str) -> sql.Composable:
        return sql.SQL(" + ").join(sql.SQL("({} > (%({})s::float8[])[{}])::int").format(sql.SQL(expression), sql.SQL(name),
                                                                             sql.Literal(k)) for k in range(1, 5))
    scores = sql.SQL("""
        SELECT n.*, (5 - ({idle}))::smallint AS r_score, (1 + {orders})::smallint AS f_score,
               (1 + {spent})::smallint AS m_score FROM traits_new n""").format(
        idle=above("n.rfm_t - n.rfm_recency", "idle"), orders=above("n.order_count", "orders"),
        spent=above("n.total_spent", "spent"))
    return sql.SQL("SELECT s.*, {segment} AS rfm_segment FROM ({scores}) s").format(
        segment=_segment_case(), scores=scores)


def _write(cursor, *, profile_ids: list[str] | None, incremental: bool) -> int:
    """Update changed rows, insert missing ones, zero the ones whose purchases are gone.

    Separate UPDATE and INSERT (not INSERT ... ON CONFLICT DO UPDATE WHERE changed): the conflict
    path locks every existing row even when nothing changed, which dirtied the whole table.
    """
    idle, orders, spent = _breakpoints(cursor, incremental=incremental)
    params = {"idle": idle, "orders": orders, "spent": spent, "ids": profile_ids}
    names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    sets = sql.SQL(", ").join(sql.SQL("{c} = x.{c}").format(c=sql.Identifier(c)) for c in COLUMNS)
    changed = sql.SQL(" OR ").join(sql.SQL("t.{c} IS DISTINCT FROM x.{c}").format(c=sql.Identifier(c))
                                   for c in COLUMNS)
    scored = _scored_select()
    cursor.execute(sql.SQL("""
        UPDATE profiles_computedtraits t SET updated_at = now(), {sets}
        FROM ({scored}) x WHERE x.profile_id = t.profile_id AND ({changed})""").format(
        sets=sets, scored=scored, changed=changed), params)
    written = cursor.rowcount
    cursor.execute(sql.SQL("""
        INSERT INTO profiles_computedtraits (profile_id, updated_at, {names})
        SELECT x.profile_id, now(), {x_names} FROM ({scored}) x
        WHERE NOT EXISTS (SELECT 1 FROM profiles_computedtraits t WHERE t.profile_id = x.profile_id)
        ON CONFLICT (profile_id) DO NOTHING""").format(
        names=names, x_names=sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in COLUMNS),
        scored=scored), params)
    written += cursor.rowcount
    # Profiles that no longer have purchases (orders moved by a merge, erased, ...): back to zero.
    scope = sql.SQL("AND t.profile_id = ANY(%(ids)s::uuid[])") if profile_ids is not None else sql.SQL("")
    cursor.execute(sql.SQL("""
        UPDATE profiles_computedtraits t SET updated_at = now(), order_count = 0, total_spent = 0,
            average_order_value = NULL, first_purchase_at = NULL, last_purchase_at = NULL, favourite_category = '',
            rfm_frequency = NULL, rfm_recency = NULL, rfm_t = NULL, rfm_monetary_value = NULL, tenure_days = NULL,
            rfm_as_of = NULL, r_score = NULL, f_score = NULL, m_score = NULL, rfm_segment = ''
        WHERE t.order_count > 0 AND NOT EXISTS (SELECT 1 FROM traits_new n WHERE n.profile_id = t.profile_id)
        {scope}""").format(scope=scope), params)
    return written + cursor.rowcount


# Full rebuilds and incremental refreshes serialise on this (pg_advisory_xact_lock key).
_LOCK_KEY = 0x0C0FFEE4


@transaction.atomic
def computed_traits_refresh(*, profile_ids, as_of: date | None = None) -> RefreshResult:
    """Recompute the purchase traits of these profiles (after an import or a purchase event)."""
    ids = sorted({str(p) for p in profile_ids})
    began = time.monotonic()
    if not ids:
        return RefreshResult(0, 0.0)
    as_of = as_of or datetime.now(UTC).date()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        _aggregate(cursor, profile_ids=ids, as_of=as_of)
        written = _write(cursor, profile_ids=ids, incremental=True)
    seconds = time.monotonic() - began
    logger.info("computed traits refreshed", extra={"profiles": len(ids), "written": written,
                                                    "seconds": round(seconds, 2)})
    return RefreshResult(written, seconds)


@transaction.atomic
def computed_traits_rebuild(*, as_of: date | None = None) -> RefreshResult:
    """Recompute everyone's purchase traits and RFM scores (nightly; T grows every day)."""
    began = time.monotonic()
    as_of = as_of or datetime.now(UTC).date()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        cursor.execute("SET LOCAL work_mem = '256MB'")
        _aggregate(cursor, profile_ids=None, as_of=as_of)
        written = _write(cursor, profile_ids=None, incremental=False)
    seconds = time.monotonic() - began
    logger.info("computed traits rebuilt", extra={"written": written, "seconds": round(seconds, 2)})
    return RefreshResult(written, seconds)
