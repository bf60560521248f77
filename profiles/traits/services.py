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
from datetime import UTC, date, datetime

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
    """Fill temp table traits_new with one row per profile that has purchases up to `as_of`."""
    only = sql.SQL("AND profile_id = ANY(%(ids)s::uuid[])") if profile_ids is not None else sql.SQL("")
    # Index transaction_profile_ts_idx (profile_id, timestamp) serves the incremental case.
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE traits_tx ON COMMIT DROP AS
        SELECT id, profile_id, amount, timestamp, (timestamp AT TIME ZONE 'UTC')::date AS day
        FROM profiles_transaction
        WHERE profile_id IS NOT NULL AND timestamp < (%(as_of)s::date + 1)::timestamp AT TIME ZONE 'UTC' {only}
    """).format(only=only), {"ids": profile_ids, "as_of": as_of})
    cursor.execute("""
        CREATE TEMP TABLE traits_new ON COMMIT DROP AS
        WITH orders AS (
            SELECT profile_id, count(*) AS order_count, sum(amount) AS total_spent, min(timestamp) AS first_at,
                   max(timestamp) AS last_at
            FROM traits_tx GROUP BY profile_id),
        days AS (
            SELECT profile_id, day, sum(amount) AS value, min(day) OVER (PARTITION BY profile_id) AS first_day
            FROM traits_tx GROUP BY profile_id, day),
        rfm AS (
            SELECT profile_id, count(*) - 1 AS frequency, max(day) - min(day) AS recency,
                   %(as_of)s::date - min(day) AS t,
                   coalesce(sum(value) FILTER (WHERE day > first_day) / nullif(count(*) - 1, 0), 0) AS monetary
            FROM days GROUP BY profile_id),
        favourite AS (
            SELECT DISTINCT ON (t.profile_id) t.profile_id, i.category
            FROM profiles_transactionitem i JOIN traits_tx t ON t.id = i.transaction_id
            WHERE i.category <> ''
            GROUP BY t.profile_id, i.category
            ORDER BY t.profile_id, sum(i.quantity) DESC, count(*) DESC, i.category)
        SELECT o.profile_id, o.order_count, o.total_spent, round(o.total_spent / o.order_count, 2) AS average_order_value,
               o.first_at AS first_purchase_at, o.last_at AS last_purchase_at,
               coalesce(f.category, '') AS favourite_category, r.frequency AS rfm_frequency,
               r.recency::float8 AS rfm_recency, r.t::float8 AS rfm_t, round(r.monetary, 2) AS rfm_monetary_value,
               r.t AS tenure_days, %(as_of)s::date AS rfm_as_of,
               NULL::smallint AS r_score, NULL::smallint AS f_score, NULL::smallint AS m_score, ''::text AS rfm_segment
        FROM orders o JOIN rfm r USING (profile_id) LEFT JOIN favourite f USING (profile_id)""", {"as_of": as_of})


def _score(cursor, *, incremental: bool) -> None:
    """Quintile scores 1-5 against breakpoints of the population (everyone with purchases)."""
    population = ("""SELECT rfm_t - rfm_recency AS idle, order_count, total_spent FROM traits_new
                     UNION ALL SELECT c.rfm_t - c.rfm_recency, c.order_count, c.total_spent
                     FROM profiles_computedtraits c WHERE c.order_count > 0
                     AND NOT EXISTS (SELECT 1 FROM traits_new n WHERE n.profile_id = c.profile_id)"""
                  if incremental else "SELECT rfm_t - rfm_recency AS idle, order_count, total_spent FROM traits_new")
    cursor.execute(sql.SQL("""
        WITH p AS ({population}),
        b AS (SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY idle) AS idle,
                     percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY order_count) AS orders,
                     percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY total_spent) AS spent FROM p)
        UPDATE traits_new n SET
            r_score = 5 - ((n.rfm_t - n.rfm_recency > b.idle[1])::int + (n.rfm_t - n.rfm_recency > b.idle[2])::int
                          + (n.rfm_t - n.rfm_recency > b.idle[3])::int + (n.rfm_t - n.rfm_recency > b.idle[4])::int),
            f_score = 1 + (n.order_count > b.orders[1])::int + (n.order_count > b.orders[2])::int
                        + (n.order_count > b.orders[3])::int + (n.order_count > b.orders[4])::int,
            m_score = 1 + (n.total_spent > b.spent[1])::int + (n.total_spent > b.spent[2])::int
                        + (n.total_spent > b.spent[3])::int + (n.total_spent > b.spent[4])::int
        FROM b""").format(population=sql.SQL(population)))
    cursor.execute(sql.SQL("UPDATE traits_new SET rfm_segment = {}").format(_segment_case()))


def _upsert(cursor, *, profile_ids: list[str] | None) -> int:
    names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    updates = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS)
    changed = sql.SQL(" OR ").join(
        sql.SQL("t.{c} IS DISTINCT FROM EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in COLUMNS)
    cursor.execute(sql.SQL("""
        INSERT INTO profiles_computedtraits AS t (profile_id, updated_at, {names})
        SELECT profile_id, now(), {names} FROM traits_new
        ON CONFLICT (profile_id) DO UPDATE SET updated_at = now(), {updates} WHERE {changed}""").format(
        names=names, updates=updates, changed=changed))
    written = cursor.rowcount
    # Profiles that no longer have purchases (orders moved by a merge, erased, ...): back to zero.
    scope = sql.SQL("AND t.profile_id = ANY(%(ids)s::uuid[])") if profile_ids is not None else sql.SQL("")
    cursor.execute(sql.SQL("""
        UPDATE profiles_computedtraits t SET updated_at = now(), order_count = 0, total_spent = 0,
            average_order_value = NULL, first_purchase_at = NULL, last_purchase_at = NULL, favourite_category = '',
            rfm_frequency = NULL, rfm_recency = NULL, rfm_t = NULL, rfm_monetary_value = NULL, tenure_days = NULL,
            rfm_as_of = NULL, r_score = NULL, f_score = NULL, m_score = NULL, rfm_segment = ''
        WHERE t.order_count > 0 AND NOT EXISTS (SELECT 1 FROM traits_new n WHERE n.profile_id = t.profile_id)
        {scope}""").format(scope=scope), {"ids": profile_ids})
    return written + cursor.rowcount


@transaction.atomic
def computed_traits_refresh(*, profile_ids, as_of: date | None = None) -> RefreshResult:
    """Recompute the purchase traits of these profiles (after an import or a purchase event)."""
    ids = sorted({str(p) for p in profile_ids})
    began = time.monotonic()
    if not ids:
        return RefreshResult(0, 0.0)
    as_of = as_of or datetime.now(UTC).date()
    with connection.cursor() as cursor:
        _aggregate(cursor, profile_ids=ids, as_of=as_of)
        _score(cursor, incremental=True)
        written = _upsert(cursor, profile_ids=ids)
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
        cursor.execute("SET LOCAL work_mem = '256MB'")
        _aggregate(cursor, profile_ids=None, as_of=as_of)
        _score(cursor, incremental=False)
        written = _upsert(cursor, profile_ids=None)
    seconds = time.monotonic() - began
    logger.info("computed traits rebuilt", extra={"written": written, "seconds": round(seconds, 2)})
    return RefreshResult(written, seconds)
