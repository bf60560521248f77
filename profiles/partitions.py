"""Monthly partitions of the events table.

`profiles_event` is range-partitioned on `timestamp` with one partition per calendar month
(UTC) and a DEFAULT partition that catches anything outside them, so no event is ever
refused for its date. Creating a month whose rows already sit in DEFAULT moves them: the new
table is filled from DEFAULT, those rows deleted, then the table attached (attaching checks
DEFAULT holds nothing of its range). All under one advisory lock, so concurrent callers
(beat, importers, the demo loader) serialise.
"""

from datetime import UTC, date, datetime

from django.db import connection, transaction
from psycopg import sql

PARENT = "profiles_event"
DEFAULT_PARTITION = "profiles_event_default"
# pg_advisory_xact_lock key: any constant unique in this project.
_LOCK_KEY = 0x0C0FFEE1


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def months_between(start: date, end: date) -> list[date]:
    months, current = [], month_start(start)
    while current <= end:
        months.append(current)
        current = next_month(current)
    return months


def existing_partitions() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [PARENT],
        )
        return {row[0] for row in cursor.fetchall()}


def event_partitions_ensure(*, start: date, end: date) -> list[str]:
    """Create the monthly partitions covering [start, end]; return the names created."""
    wanted = [m for m in months_between(start, end) if partition_name(m) not in existing_partitions()]
    created = []
    for month in wanted:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            if partition_name(month) in existing_partitions():
                continue
            _create_month(cursor, month)
            created.append(partition_name(month))
    return created


def _create_month(cursor, month: date) -> None:
    conn = cursor.connection
    name, parent, default = (sql.Identifier(n) for n in (partition_name(month), PARENT, DEFAULT_PARTITION))
    bounds = [datetime(month.year, month.month, 1, tzinfo=UTC),
              datetime.combine(next_month(month), datetime.min.time(), tzinfo=UTC)]
    statements = [
        (sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(name, parent), []),
        (sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE timestamp >= %s AND timestamp < %s").format(name, default),
         bounds),
        (sql.SQL("DELETE FROM {} WHERE timestamp >= %s AND timestamp < %s").format(default), bounds),
        (sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM (%s) TO (%s)").format(parent, name), bounds),
    ]
    for statement, params in statements:
        cursor.execute(statement.as_string(conn), params)


def event_partitions_ahead(*, months_ahead: int = 3, today: date | None = None) -> list[str]:
    """Keep partitions for this month and the next `months_ahead` months."""
    today = today or datetime.now(UTC).date()
    end = today
    for _ in range(months_ahead):
        end = next_month(end)
    return event_partitions_ensure(start=today, end=end)
