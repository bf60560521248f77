"""Locks of the identity graph.

- The graph lock (`pg_advisory_xact_lock` on GRAPH_LOCK_KEY): resolvers and un-merges take it
  shared, so any number run side by side; a full rebuild takes it exclusive, so it sees and
  rewrites a graph nobody else is changing.
- Profile locks: every write that moves identities, events or transactions between profiles
  first locks the profiles involved with `SELECT … FOR NO KEY UPDATE` in ascending id order (a
  stable order, so two resolvers never deadlock on each other), then re-reads what it planned
  from and retries if another transaction changed it meanwhile (see resolve.Conflict). NO KEY:
  the id never changes, and rows of other tables pointing at a locked profile (consent state,
  memberships) may still be written — a consent append holding the ledger lock must never wait
  for a resolver that waits for the ledger lock.
- Lock order: graph lock, profile locks, then the consent ledger lock (consent.services.state
  takes it when a merge, link or split folds consent), never the other way round.
"""

from psycopg import sql

GRAPH_LOCK_KEY = 0x1D3A7170  # any constant unique in this project (partitions use 0x0C0FFEE1)


def graph_lock_shared(cursor) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [GRAPH_LOCK_KEY])


def graph_lock_exclusive(cursor) -> None:
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [GRAPH_LOCK_KEY])


def profiles_lock(cursor, profile_ids) -> dict:
    """Lock these profiles (ascending id); return {id: (created_at, merged_into_id, first_seen_at)}."""
    ids = sorted(set(profile_ids))
    if not ids:
        return {}
    cursor.execute(sql.SQL("SELECT id, created_at, merged_into_id, first_seen_at FROM profiles_profile "
                           "WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"), [ids])
    return {row[0]: (row[1], row[2], row[3]) for row in cursor.fetchall()}


def survivor_key(profile_id, created_at, first_seen_at):
    """Which profile survives a merge: the oldest (created first, then seen first, then by id),
    so the id handed out earliest keeps working."""
    return created_at, first_seen_at or created_at, str(profile_id)
