"""Set-based SQL and COPY for ingestion. Call inside one transaction (see services).

Per request: one INSERT … ON CONFLICT over the batch's message ids (dedupe), one COPY of the
new events, and — only when present — one INSERT each for orders, their items, rejections and
the counts of events consent did not let in.
Every statement is composed with psycopg.sql; values always travel as parameters.
"""

from datetime import datetime

import psycopg
from psycopg import sql

from cdp import crypto
from profiles.ingestion.normalisation import EVENT_COLUMNS, Order


def _columns(names) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in names)


# Relies on the unique index eventdedupe_source_msg_uniq. Ids go in sorted so that two
# requests sharing ids lock them in the same order (no deadlock between concurrent retries).
DEDUPE_CLAIM = sql.SQL(
    "INSERT INTO {table} (source_id, message_id, first_received_at) "
    "SELECT %s, message_id, %s FROM unnest(%s::varchar[]) AS message_id "
    "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id"
).format(table=sql.Identifier("profiles_eventdedupe"))

EVENTS_COPY = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
    table=sql.Identifier("profiles_event"), columns=_columns(EVENT_COLUMNS))

# Relies on the unique constraint transaction_source_order_uniq: an order is stored once per source.
ORDERS_INSERT = sql.SQL(
    "INSERT INTO {table} (source_id, order_id, profile_id, amount, currency, channel, store, timestamp, created_at) "
    "SELECT %s, o.order_id, NULL, o.amount, o.currency, %s, '', o.ts, %s "
    "FROM unnest(%s::varchar[], %s::numeric[], %s::varchar[], %s::timestamptz[]) AS o(order_id, amount, currency, ts) "
    "ON CONFLICT (source_id, order_id) DO NOTHING RETURNING id, order_id"
).format(table=sql.Identifier("profiles_transaction"))

ITEMS_INSERT = sql.SQL(
    "INSERT INTO {table} (transaction_id, product_sku, product_name, category, price, quantity) "
    "SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[], %s::numeric[], %s::integer[])"
).format(table=sql.Identifier("profiles_transactionitem"))

REJECTED_COLUMNS = ("source_id", "received_at", "endpoint", "reason", "message", "batch_index", "payload",
                    "raw_body", "size_bytes", "truncated", "key_prefix", "replay_note")
REJECTED_COPY = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
    table=sql.Identifier("profiles_rejectedevent"), columns=_columns(REJECTED_COLUMNS))

# Relies on the unique constraint dropped_source_hour_uniq (source_id, hour, reason).
DROPPED_UPSERT = sql.SQL(
    "INSERT INTO {table} AS d (source_id, hour, reason, count) "
    "SELECT %s, date_trunc('hour', %s::timestamptz, 'UTC'), reason, n FROM unnest(%s::varchar[], %s::bigint[]) "
    "AS c(reason, n) ORDER BY reason "
    "ON CONFLICT (source_id, hour, reason) DO UPDATE SET count = d.count + EXCLUDED.count"
).format(table=sql.Identifier("profiles_droppedeventcount"))

# Bounded batches by physical row id; the BRIN index eventdedupe_received_brin finds old rows.
DEDUPE_PURGE = sql.SQL(
    "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM {table} WHERE first_received_at < %s LIMIT %s))"
).format(table=sql.Identifier("profiles_eventdedupe"))


def dedupe_claim(cursor, *, source_id: int, message_ids: list[str], received_at: datetime) -> set[str]:
    """Record the message ids; return those not seen before for this source."""
    if not message_ids:
        return set()
    # Server-side parameters: the id array travels as one value instead of being quoted into
    # the statement text client-side (Django's default cursor does that); prepared once per
    # connection, as it runs on every request.
    with psycopg.Cursor(cursor.connection) as bound:
        bound.execute(DEDUPE_CLAIM, [source_id, received_at, sorted(message_ids)], prepare=True)
        return {row[0] for row in bound.fetchall()}


def events_copy(cursor, rows: list[tuple]) -> None:
    with cursor.copy(EVENTS_COPY) as copy:
        for row in rows:
            copy.write_row(row)


def orders_insert(cursor, *, source_id: int, channel: str, orders: list[Order], created_at: datetime) -> int:
    """Insert transactions (profile NULL) and their items; orders already stored are skipped."""
    if not orders:
        return 0
    cursor.execute(ORDERS_INSERT, [source_id, channel, created_at, [o.order_id for o in orders],
                                   [o.amount for o in orders], [o.currency for o in orders],
                                   [o.timestamp for o in orders]])
    created = dict((order_id, transaction_id) for transaction_id, order_id in cursor.fetchall())
    items = [(created[order.order_id], item) for order in orders if order.order_id in created for item in order.items]
    if items:
        cursor.execute(ITEMS_INSERT, [[tid for tid, _ in items], [i.sku for _, i in items], [i.name for _, i in items],
                                      [i.category for _, i in items], [i.price for _, i in items],
                                      [i.quantity for _, i in items]])
    return len(created)


def rejections_copy(cursor, rows: list[dict]) -> None:
    """Rows: dicts with REJECTED_COLUMNS keys; payload and raw_body are encrypted here."""
    with cursor.copy(REJECTED_COPY) as copy:
        for row in rows:
            values = dict(row, payload=crypto.encrypt(row.get("payload")), raw_body=crypto.encrypt(row.get("raw_body") or ""))
            copy.write_row([values.get(column) for column in REJECTED_COLUMNS])


def dropped_count(cursor, *, source_id: int, received_at: datetime, counts: dict[str, int]) -> None:
    """Add this request's dropped events to the per-source, per-hour counters (one statement)."""
    reasons = sorted(reason for reason, count in counts.items() if count)
    if reasons:
        cursor.execute(DROPPED_UPSERT, [source_id, received_at, reasons, [counts[reason] for reason in reasons]])


def dedupe_purge_batch(cursor, *, before: datetime, batch_size: int) -> int:
    cursor.execute(DEDUPE_PURGE, [before, batch_size])
    return cursor.rowcount
