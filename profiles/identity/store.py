"""Set-based reads and writes shared by resolution, merges, un-merges and the rebuild.

Everything here takes a raw psycopg cursor inside the caller's transaction. Bulk input goes
through `temp_copy` (a temporary table filled with COPY, dropped at commit) and then one
composed statement; the few rows of a merge or an un-merge go as one array per column
(`rows_unnest`: no DDL, one round trip). No values are ever formatted into SQL text.
"""

import uuid
from datetime import datetime

import orjson
from psycopg import sql

from cdp import crypto
from profiles.identity.traits import SEEN, TRAITS_PREFIX, TYPED, ProfileState, Provenance

# Events that no usable identifier ties to anyone (every id blocked) point here: a profile id
# no Profile row has (events carry no foreign key), so they leave the unresolved index, are
# kept, and join no segment. resolve.events_unattributed_requeue sends them back to resolution.
UNATTRIBUTED = uuid.UUID(int=0)
ENCRYPTED = frozenset({"first_name", "last_name"})
ORDER_EVENT_NAMES = ("Order Completed", "order_completed")
# The order id of an order event as ingestion stores it on the transaction: numbers as text,
# whole floats without ".0" (ingestion's id_text), so (source, order id) joins the transaction.
ORDER_ID_SQL = sql.SQL(
    "CASE WHEN jsonb_typeof(e.properties -> 'order_id') = 'number' "
    "THEN CASE WHEN (e.properties ->> 'order_id')::numeric = trunc((e.properties ->> 'order_id')::numeric) "
    "THEN trunc((e.properties ->> 'order_id')::numeric)::text ELSE e.properties ->> 'order_id' END "
    "ELSE e.properties ->> 'order_id' END")


def json_value(value):
    """A jsonb column as Python: Django's psycopg setup hands jsonb over as text."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def temp_copy(cursor, name: str, columns: list[tuple[str, str]], rows, *, analyze: bool = False) -> None:
    """(Re)create temporary table `name` with `columns` [(name, type)] and COPY `rows` into it.
    Without statistics the planner still sees the table's size; `analyze` when a join needs more."""
    table = sql.Identifier(name)
    cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    definition = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns)
    cursor.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(table, definition))
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    with cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, names)) as copy:
        for row in rows:
            copy.write_row(row)
    if analyze:
        cursor.execute(sql.SQL("ANALYZE {}").format(table))


def rows_unnest(columns: list[tuple[str, str]], rows) -> tuple[sql.Composable, list]:
    """`unnest(%s::type[], ...) AS s(column, ...)` and its parameters (one list per column)."""
    rows = list(rows)
    arrays = [list(values) for values in zip(*rows, strict=True)] if rows else [[] for _ in columns]
    types = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(kind)) for _, kind in columns)
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    return sql.SQL("unnest({}) AS s({})").format(types, names), arrays


def encrypt_snapshot(snapshot: dict) -> str:
    """A ProfileState snapshot as stored in ProfileMerge.state_before (JSON, encrypted)."""
    return crypto.encrypt(orjson.dumps(snapshot).decode())


def sources_authority(cursor) -> dict[int, bool]:
    cursor.execute("SELECT id, is_authoritative FROM profiles_source")
    return dict(cursor.fetchall())


# --- profile states (traits with provenance, first/last seen, device) ------------------------

_STATE_COLUMNS = ("id", *TYPED, "traits", *SEEN)


def states_load(cursor, profile_ids) -> dict:
    """ProfileState of each profile (names decrypted), with the provenance of its values."""
    ids = list(set(profile_ids))
    if not ids:
        return {}
    columns = sql.SQL(", ").join(map(sql.Identifier, _STATE_COLUMNS))
    cursor.execute(sql.SQL("SELECT {} FROM profiles_profile WHERE id = ANY(%s)").format(columns), [ids])
    states = {}
    for row in cursor.fetchall():
        record = dict(zip(_STATE_COLUMNS, row, strict=True))
        state = ProfileState(record["id"])
        for column in TYPED:
            value = record[column]
            if column in ENCRYPTED and value is not None:
                value = crypto.decrypt(value)
            if value not in (None, ""):
                state.values[column] = value
        for key, value in (json_value(record["traits"]) or {}).items():
            state.values[TRAITS_PREFIX + key] = value
        state.seen = {column: record[column] for column in SEEN}
        states[record["id"]] = state
    cursor.execute("SELECT profile_id, name, observed_at, source_id, is_authoritative "
                   "FROM profiles_profiletraitsource WHERE profile_id = ANY(%s)", [ids])
    for profile_id, name, observed_at, source_id, authoritative in cursor.fetchall():
        if profile_id in states:
            states[profile_id].sources[name] = Provenance(observed_at, source_id, authoritative)
    return states


def _state_row(state: ProfileState) -> tuple:
    values = []
    for column in TYPED:
        value = state.values.get(column)
        if column in ENCRYPTED:
            values.append(crypto.encrypt(str(value)) if value not in (None, "") else None)
        elif column in ("age", "birth_year"):
            values.append(value)
        else:
            values.append("" if value is None else str(value))
    traits = {name[len(TRAITS_PREFIX):]: value for name, value in state.values.items()
              if name.startswith(TRAITS_PREFIX)}
    seen = state.seen
    return (state.profile_id, *values, orjson.dumps(traits).decode(), seen.get("first_seen_at"),
            seen.get("last_seen_at"), seen.get("last_device_type") or "", seen.get("last_os") or "",
            seen.get("last_browser") or "")


_STATE_TYPES = [("id", "uuid"), ("first_name", "text"), ("last_name", "text"), ("birth_year", "smallint"),
                ("age", "smallint"), ("gender", "text"), ("country", "text"), ("city", "text"), ("postcode", "text"),
                ("income_band", "text"), ("language", "text"), ("occupation", "text"), ("traits", "jsonb"),
                ("first_seen_at", "timestamptz"), ("last_seen_at", "timestamptz"), ("last_device_type", "text"),
                ("last_os", "text"), ("last_browser", "text")]


def states_write(cursor, states, *, now: datetime, insert: bool = False) -> None:
    """Write states back (UPDATE), or create them as new profiles (`insert`), with provenance."""
    states = list(states)
    if not states:
        return
    source, arrays = rows_unnest(_STATE_TYPES, (_state_row(state) for state in states))
    names = [name for name, _ in _STATE_TYPES]
    if insert:
        columns = sql.SQL(", ").join(map(sql.Identifier, [*names, "created_at", "updated_at"]))
        selected = sql.SQL(", ").join(map(sql.Identifier, names))
        cursor.execute(sql.SQL("INSERT INTO profiles_profile ({}) SELECT {}, %s, %s FROM {}")
                       .format(columns, selected, source), [now, now, *arrays])
    else:
        assignments = sql.SQL(", ").join(sql.SQL("{0} = s.{0}").format(sql.Identifier(name)) for name in names[1:])
        cursor.execute(sql.SQL("UPDATE profiles_profile p SET {}, updated_at = %s FROM {} WHERE p.id = s.id")
                       .format(assignments, source), [now, *arrays])
        cursor.execute("DELETE FROM profiles_profiletraitsource WHERE profile_id = ANY(%s)",
                       [[state.profile_id for state in states]])
    provenance = [(state.profile_id, name, p.source_id, p.authoritative, p.observed_at)
                  for state in states for name, p in state.sources.items()
                  if p.observed_at is not None and name in state.values]
    if provenance:
        with cursor.copy("COPY profiles_profiletraitsource (profile_id, name, source_id, is_authoritative, "
                         "observed_at) FROM STDIN") as copy:
            for row in provenance:
                copy.write_row(row)
