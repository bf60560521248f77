"""Merging profiles: set-based re-pointing of identities, events and transactions to survivors.

The survivor keeps its id; an absorbed profile keeps its row with `merged_into` set (old ids
handed to client sites still resolve), its own columns untouched — an un-merge revives it as it
was. Callers hold the profile locks (locks.profiles_lock) and fold traits (traits.ProfileState).
Consent follows in the same transaction: merges never widen it (consent.services.state).
"""

from dataclasses import dataclass

import orjson
from psycopg import sql

from cdp import crypto, hooks
from consent.services.state import consent_merges_fold
from profiles.identity.store import temp_copy


@dataclass
class Merge:
    absorbed: object  # profile id
    survivor: object
    link_id: int | None
    rule: str
    snapshot: dict | None = None  # survivor's state before this merge (ProfileState.to_snapshot)


def _moved_counts(cursor, statement: sql.Composable) -> dict:
    cursor.execute(sql.SQL("WITH moved AS ({}) SELECT absorbed, count(*) FROM moved GROUP BY absorbed")
                   .format(statement))
    return dict(cursor.fetchall())


def merges_apply(cursor, *, merges: list[Merge], now, actor_id=None, reason: str = "",
                 fold_consent: bool = True) -> dict:
    """Re-point everything of each absorbed profile to its survivor, log the merges and fold
    consent (most restrictive on disagreement, recorded in the ledger).

    Returns {absorbed: (identities, events, transactions moved)}. Re-pointing is idempotent:
    running it again finds nothing left on the absorbed profiles. The resolver passes
    `fold_consent=False` and calls `merges_consent_fold` as its batch's last step, so the ledger
    lock is held only until its commit.
    """
    if not merges:
        return {}
    temp_copy(cursor, "_identity_merge", [("absorbed", "uuid"), ("survivor", "uuid")],
              [(m.absorbed, m.survivor) for m in merges])
    # origin_profile_id is filled before the first move, so an un-merge knows where each came from.
    identities = _moved_counts(cursor, sql.SQL(
        "UPDATE profiles_identity i SET origin_profile_id = COALESCE(i.origin_profile_id, i.profile_id), "
        "profile_id = m.survivor FROM _identity_merge m WHERE i.profile_id = m.absorbed RETURNING m.absorbed"))
    # Index profiles_event_profile_name_ts (profile_id, …) on every partition.
    events = _moved_counts(cursor, sql.SQL(
        "UPDATE profiles_event e SET profile_id = m.survivor FROM _identity_merge m "
        "WHERE e.profile_id = m.absorbed RETURNING m.absorbed"))
    transactions = _moved_counts(cursor, sql.SQL(
        "UPDATE profiles_transaction t SET profile_id = m.survivor FROM _identity_merge m "
        "WHERE t.profile_id = m.absorbed RETURNING m.absorbed"))
    # Keep redirects one hop long: profiles absorbed earlier by an absorbed profile follow it.
    cursor.execute("UPDATE profiles_profile p SET merged_into_id = m.survivor, updated_at = %s "
                   "FROM _identity_merge m WHERE p.merged_into_id = m.absorbed", [now])
    cursor.execute("UPDATE profiles_profile p SET merged_into_id = m.survivor, updated_at = %s "
                   "FROM _identity_merge m WHERE p.id = m.absorbed", [now])
    counts = {m.absorbed: (identities.get(m.absorbed, 0), events.get(m.absorbed, 0),
                           transactions.get(m.absorbed, 0)) for m in merges}
    hooks.transactions_changed(profile_ids=[p for m in merges if transactions.get(m.absorbed)
                                            for p in (m.survivor, m.absorbed)])
    with cursor.copy("COPY profiles_profilemerge (kind, profile_id, other_profile_id, link_id, rule, created_at, "
                     "actor_id, reason, events_moved, transactions_moved, identities_moved, state_before) "
                     "FROM STDIN") as copy:
        for m in merges:
            moved = counts[m.absorbed]
            snapshot = crypto.encrypt(orjson.dumps(m.snapshot).decode()) if m.snapshot is not None else None
            copy.write_row(("merge", m.survivor, m.absorbed, m.link_id, m.rule, now, actor_id, reason,
                            moved[1], moved[2], moved[0], snapshot))
    if fold_consent:
        merges_consent_fold(merges=merges, actor_id=actor_id)
    return counts


def merges_consent_fold(*, merges: list[Merge], actor_id=None) -> None:
    """Merges never widen consent: fold each absorbed profile's decisions into its survivor's and
    link the survivor's decided identifiers (takes the consent ledger lock)."""
    consent_merges_fold(merges=[(m.survivor, m.absorbed) for m in merges], actor_id=actor_id)
