"""Current consent, kept in step with the ledger inside the appending transaction.

- `SubjectConsent(subject, purpose)` is the subject's newest record by (decided_at, sequence).
- A subject (identifier) is linked to at most one profile (`SubjectLink`). A new record of a
  linked subject is that person's newest decision: `ProfileConsent(profile, purpose)` takes it
  and any conflict mark is cleared ("until the person decides again").
- When subjects join a profile — identity resolution attached an identifier that already carried
  decisions, or a merge joined two profiles — their decisions are *folded* into the profile's:
  if they all agree, that state stands; if they differ, the most restrictive state (withdrawn)
  holds, `conflict` is set, and a `system`/`merge` record in the ledger documents it. Merges and
  links therefore never widen consent. A purpose nobody decided on is not a conflict.
- No row means not granted (fail closed): readers in consent.enforcement only look for granted rows.

Everything here runs under LEDGER_LOCK (taken by `ledger_append` or by the public entry points),
because folding may append records.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from django.db import connection, transaction

from cdp import crypto, hooks
from consent import reference
from consent.models import ConsentRecord
from consent.services import ledger

PROFILE_SUBJECT = "profile_id"


@dataclass(frozen=True)
class State:
    granted: bool
    decided_at: datetime
    record_id: int
    conflict: bool = False


@dataclass(frozen=True)
class FoldConflict:
    profile_id: UUID
    purpose_id: int
    conflicting_records: tuple[int, ...]
    record_sequence: int


def profile_subject_hash(profile_id) -> bytes:
    return crypto.keyed_hash(PROFILE_SUBJECT, str(profile_id))


def fold(current: State | None, incoming: list[State]) -> tuple[State | None, tuple[int, ...]]:
    """Combine a profile's state with states joining it: (state to keep, ()) when they agree,
    (None, conflicting record ids) when they differ (the caller records a withdrawal)."""
    states = ([current] if current else []) + list(incoming)
    if not states:
        return None, ()
    if len({state.granted for state in states}) == 1:
        return max(states, key=lambda s: (s.decided_at, s.record_id)), ()
    return None, tuple(sorted({state.record_id for state in states}))


# -- applying appended records ----------------------------------------------------------------

_SUBJECT_UPSERT = """
INSERT INTO consent_subjectconsent (subject_kind, subject_hash, purpose_id, granted, decided_at, record_id, updated_at)
SELECT DISTINCT ON (subject_hash, subject_kind, purpose_id)
       subject_kind, subject_hash, purpose_id, granted, decided_at, sequence, now()
FROM consent_consentrecord WHERE sequence BETWEEN %(first)s AND %(last)s
ORDER BY subject_hash, subject_kind, purpose_id, decided_at DESC, sequence DESC
ON CONFLICT (subject_hash, subject_kind, purpose_id) DO UPDATE
SET granted = EXCLUDED.granted, decided_at = EXCLUDED.decided_at, record_id = EXCLUDED.record_id,
    updated_at = EXCLUDED.updated_at
WHERE (EXCLUDED.decided_at, EXCLUDED.record_id)
      > (consent_subjectconsent.decided_at, consent_subjectconsent.record_id)
"""
# New consent for an identifier of an erased person lifts its suppression entry.
_SUPPRESSION_LIFT = """
UPDATE consent_suppressionentry s SET lifted_at = now(), lifted_by_record_id = r.sequence
FROM (SELECT DISTINCT ON (subject_hash, subject_kind) subject_kind, subject_hash, sequence
      FROM consent_consentrecord
      WHERE sequence BETWEEN %(first)s AND %(last)s AND granted AND source <> 'system'
      ORDER BY subject_hash, subject_kind, sequence) r
WHERE s.kind = r.subject_kind AND s.value_hash = r.subject_hash AND s.lifted_at IS NULL
"""
# Linked subjects: the newest record per (profile, purpose) becomes the profile's state.
# Index: subject_link_uniq (subject_hash, subject_kind).
_PROFILE_UPSERT = """
INSERT INTO consent_profileconsent (profile_id, purpose_id, granted, decided_at, record_id, conflict, updated_at)
SELECT DISTINCT ON (l.profile_id, r.purpose_id)
       l.profile_id, r.purpose_id, r.granted, r.decided_at, r.sequence, r.source = 'system', now()
FROM consent_consentrecord r
JOIN consent_subjectlink l ON l.subject_hash = r.subject_hash AND l.subject_kind = r.subject_kind
WHERE r.sequence BETWEEN %(first)s AND %(last)s
ORDER BY l.profile_id, r.purpose_id, r.decided_at DESC, r.sequence DESC
ON CONFLICT (profile_id, purpose_id) DO UPDATE
SET granted = EXCLUDED.granted, decided_at = EXCLUDED.decided_at, record_id = EXCLUDED.record_id,
    conflict = EXCLUDED.conflict, updated_at = EXCLUDED.updated_at
WHERE (EXCLUDED.decided_at, EXCLUDED.record_id)
      > (consent_profileconsent.decided_at, consent_profileconsent.record_id)
RETURNING profile_id, purpose_id
"""


def state_apply(*, first: int, last: int) -> None:
    """Bring SubjectConsent, suppression entries and ProfileConsent in step with records first..last."""
    with connection.cursor() as cursor:
        params = {"first": first, "last": last}
        cursor.execute(_SUBJECT_UPSERT, params)
        cursor.execute(_SUPPRESSION_LIFT, params)
        cursor.execute(_PROFILE_UPSERT, params)
        _announce(cursor.fetchall())


def _announce(changed: list[tuple]) -> None:
    """Tell the later stages (segments) which profiles' current consent changed, for which purposes."""
    if changed:
        keys = reference.purpose_keys_by_id()
        hooks.consent_changed(profile_ids={row[0] for row in changed},
                              purposes={keys[row[1]] for row in changed if row[1] in keys})


# -- linking subjects to profiles and folding their decisions ------------------------------------

def subjects_link_before_append(records) -> None:
    """Link the subjects of records about to be appended to their profiles (explicitly given, or
    through profiles.Identity), folding decisions those subjects carried from before the link."""
    explicit = {(r.subject_kind, bytes(r.subject_hash)): r.link_profile_id for r in records if r.link_profile_id}
    others = {(r.subject_kind, bytes(r.subject_hash)) for r in records} - set(explicit)
    pairs = _unlinked([(kind, digest, profile_id) for (kind, digest), profile_id in explicit.items()])
    if others:
        kinds, hashes = zip(*others, strict=True)
        with connection.cursor() as cursor:
            # Identities of these subjects not yet linked to their profile, in one statement.
            # Indexes: identity_kind_value_uniq (kind, value_hash), subject_link_uniq.
            cursor.execute(
                "SELECT i.kind, i.value_hash, i.profile_id FROM unnest(%s::text[], %s::bytea[]) AS s(kind, hash) "
                "JOIN profiles_identity i ON i.kind = s.kind AND i.value_hash = s.hash "
                "LEFT JOIN consent_subjectlink l ON l.subject_hash = s.hash AND l.subject_kind = s.kind "
                "WHERE l.profile_id IS DISTINCT FROM i.profile_id",
                [list(kinds), list(hashes)])
            pairs.extend((kind, bytes(digest), profile_id) for kind, digest, profile_id in cursor.fetchall())
    if pairs:
        _link_and_fold(pairs, reason="link", unlinked_only=True)


def _unlinked(pairs) -> list[tuple[str, bytes, UUID]]:
    """The (kind, hash, profile) pairs whose subject is not yet linked to that profile."""
    if not pairs:
        return []
    kinds, hashes, profiles = zip(*pairs, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.kind, s.hash, s.profile_id FROM unnest(%s::text[], %s::bytea[], %s::uuid[]) "
            "AS s(kind, hash, profile_id) LEFT JOIN consent_subjectlink l "
            "ON l.subject_hash = s.hash AND l.subject_kind = s.kind "
            "WHERE l.profile_id IS DISTINCT FROM s.profile_id",
            [list(kinds), list(hashes), [str(p) for p in profiles]])
        return [(kind, bytes(digest), profile_id) for kind, digest, profile_id in cursor.fetchall()]


def _link_upsert(cursor, pairs, now) -> None:
    kinds, hashes, profiles = zip(*pairs, strict=True)
    cursor.execute(
        "INSERT INTO consent_subjectlink (subject_kind, subject_hash, profile_id, linked_at) "
        "SELECT DISTINCT ON (hash, kind) kind, hash, profile_id, %s "
        "FROM unnest(%s::text[], %s::bytea[], %s::uuid[]) AS s(kind, hash, profile_id) "
        "ON CONFLICT (subject_hash, subject_kind) DO UPDATE SET profile_id = EXCLUDED.profile_id, "
        "linked_at = EXCLUDED.linked_at",
        [now, list(kinds), list(hashes), [str(p) for p in profiles]])


def _states(cursor, query: str, params) -> dict[tuple, list[State]]:
    cursor.execute(query, params)
    found = defaultdict(list)
    for profile_id, purpose_id, granted, decided_at, record_id, conflict in cursor.fetchall():
        found[(profile_id, purpose_id)].append(State(granted, decided_at, record_id, conflict))
    return found


def _profile_states(cursor, profile_ids) -> dict[tuple, list[State]]:
    return _states(cursor, "SELECT profile_id, purpose_id, granted, decided_at, record_id, conflict "
                           "FROM consent_profileconsent WHERE profile_id = ANY(%s::uuid[])",
                   [[str(p) for p in profile_ids]])


def _link_and_fold(pairs, *, reason: str, actor_id: int | None = None,
                   unlinked_only: bool = False) -> list[FoldConflict]:
    """Link (kind, hash, profile) pairs and fold their subjects' decisions into the profiles;
    `unlinked_only`: the caller already left out pairs linked to that profile."""
    pairs = pairs if unlinked_only else _unlinked(pairs)
    if not pairs:
        return []
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        kinds, hashes, profiles = zip(*pairs, strict=True)
        incoming = _states(
            cursor,
            "SELECT s.profile_id, c.purpose_id, c.granted, c.decided_at, c.record_id, false "
            "FROM unnest(%s::text[], %s::bytea[], %s::uuid[]) AS s(kind, hash, profile_id) "
            "JOIN consent_subjectconsent c ON c.subject_hash = s.hash AND c.subject_kind = s.kind",
            [list(kinds), list(hashes), [str(p) for p in profiles]])
        current = _profile_states(cursor, set(profiles))
        _link_upsert(cursor, pairs, now)
    return _fold_into_profiles(current, incoming, reason=reason, actor_id=actor_id)


def _fold_into_profiles(current: dict, incoming: dict, *, reason: str, actor_id: int | None) -> list[FoldConflict]:
    keep, conflicts = [], []
    for (profile_id, purpose_id), states in incoming.items():
        mine = current.get((profile_id, purpose_id), [None])[0]
        state, conflicting = fold(mine, states)
        if conflicting:
            conflicts.append((profile_id, purpose_id, conflicting))
        elif state is not None and state != mine:
            keep.append((profile_id, purpose_id, state))
    if keep:
        _profile_states_write(keep)
    return _conflicts_record(conflicts, reason=reason, actor_id=actor_id)


def _profile_states_write(rows) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO consent_profileconsent (profile_id, purpose_id, granted, decided_at, record_id, conflict, "
            "updated_at) SELECT * , now() FROM unnest(%s::uuid[], %s::bigint[], %s::boolean[], %s::timestamptz[], "
            "%s::bigint[], %s::boolean[]) "
            "ON CONFLICT (profile_id, purpose_id) DO UPDATE SET granted = EXCLUDED.granted, "
            "decided_at = EXCLUDED.decided_at, record_id = EXCLUDED.record_id, conflict = EXCLUDED.conflict, "
            "updated_at = EXCLUDED.updated_at RETURNING profile_id, purpose_id",
            [[str(p) for p, _, _ in rows], [u for _, u, _ in rows], [s.granted for _, _, s in rows],
             [s.decided_at for _, _, s in rows], [s.record_id for _, _, s in rows],
             [s.conflict for _, _, s in rows]])
        _announce(cursor.fetchall())


def _conflicts_record(conflicts, *, reason: str, actor_id: int | None) -> list[FoldConflict]:
    """Append one `system`/`merge` withdrawal per conflicting (profile, purpose); applying them
    sets the profile's state to withdrawn with the conflict mark."""
    if not conflicts:
        return []
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        _link_upsert(cursor, [(PROFILE_SUBJECT, profile_subject_hash(p), p) for p in {c[0] for c in conflicts}], now)
        records = [ledger.RecordInput(
            subject_kind=PROFILE_SUBJECT, subject_hash=profile_subject_hash(profile_id), purpose_id=purpose_id,
            granted=False, source=ConsentRecord.Source.SYSTEM, method=ConsentRecord.Method.MERGE, actor_id=actor_id,
            details={"reason": reason, "conflicting_records": list(conflicting),
                     "rule": "differing decisions joined: the most restrictive holds until the person decides again"},
        ) for profile_id, purpose_id, conflicting in conflicts]
        appended = ledger._append_locked(cursor, records)
    state_apply(first=appended[0].sequence, last=appended[-1].sequence)
    return [FoldConflict(profile_id, purpose_id, conflicting, done.sequence)
            for (profile_id, purpose_id, conflicting), done in zip(conflicts, appended, strict=True)]


# -- public entry points (phase 2 wires these into identity resolution and merges) ------------

def consent_profiles_sync(*, profile_ids) -> list[FoldConflict]:
    """Link every identifier of these profiles to them and fold decisions made on identifiers
    before they joined (call after identity resolution attached identifiers to profiles)."""
    profile_ids = [UUID(str(p)) for p in profile_ids]
    if not profile_ids:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ledger.LEDGER_LOCK])
        cursor.execute("SELECT kind, value_hash, profile_id FROM profiles_identity WHERE profile_id = ANY(%s::uuid[])",
                       [[str(p) for p in profile_ids]])
        pairs = [(kind, bytes(digest), profile_id) for kind, digest, profile_id in cursor.fetchall()]
        pairs += [(PROFILE_SUBJECT, profile_subject_hash(p), p) for p in profile_ids]
        return _link_and_fold(pairs, reason="link")


def consent_profiles_merge(*, survivor_id, absorbed_ids, actor=None) -> list[FoldConflict]:
    """Merges never widen consent: fold the absorbed profiles' decisions into the survivor's
    (most restrictive per purpose on disagreement, recorded in the ledger). Call inside the
    merge's transaction, after identities were re-pointed to the survivor."""
    survivor = UUID(str(survivor_id))
    absorbed = [UUID(str(p)) for p in absorbed_ids if UUID(str(p)) != survivor]
    actor_id = actor.pk if actor is not None and getattr(actor, "is_authenticated", False) else None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ledger.LEDGER_LOCK])
        current = _profile_states(cursor, [survivor])
        incoming = {(survivor, purpose_id): states
                    for (_, purpose_id), states in _profile_states(cursor, absorbed).items()}
        merged = defaultdict(list)
        for key, states in incoming.items():
            merged[key].extend(states)
        cursor.execute("UPDATE consent_subjectlink SET profile_id = %s WHERE profile_id = ANY(%s::uuid[])",
                       [str(survivor), [str(p) for p in absorbed]])
        cursor.execute("DELETE FROM consent_profileconsent WHERE profile_id = ANY(%s::uuid[])",
                       [[str(p) for p in absorbed]])
        conflicts = _fold_into_profiles(current, merged, reason="merge", actor_id=actor_id)
    return conflicts + consent_profiles_sync(profile_ids=[survivor])


# -- bulk entry points for identity resolution, merges and un-merges (profiles.identity) --------
# Same rules as above, set-based for batches of thousands of profiles. Only identifiers that carry
# decisions are linked: an identifier without any has nothing to fold, and `ledger_append` links
# it through profiles.Identity when its first decision arrives (subjects_link_before_append).

# Indexes: identity_profile_kind_idx (profile_id, kind), subject_consent_uniq (subject_hash,
# subject_kind, purpose), subject_link_uniq (subject_hash, subject_kind).
_DECIDED_IDENTITIES = """
SELECT i.kind, i.value_hash, i.profile_id, c.purpose_id, c.granted, c.decided_at, c.record_id
FROM profiles_identity i
JOIN consent_subjectconsent c ON c.subject_hash = i.value_hash AND c.subject_kind = i.kind
LEFT JOIN consent_subjectlink l ON l.subject_hash = i.value_hash AND l.subject_kind = i.kind
WHERE i.profile_id = ANY(%(profiles)s::uuid[]) AND (%(all)s OR l.profile_id IS DISTINCT FROM i.profile_id)
"""
# A profile-id subject's own decisions: staff's, never the `system` records folds append.
# Index: consent_record_subject_idx (subject_hash, subject_kind).
_PROFILE_SUBJECT_DECISIONS = """
SELECT DISTINCT ON (r.subject_hash, r.purpose_id) s.profile_id, r.purpose_id, r.granted, r.decided_at, r.sequence
FROM unnest(%s::bytea[], %s::uuid[]) AS s(hash, profile_id)
JOIN consent_consentrecord r ON r.subject_hash = s.hash AND r.subject_kind = 'profile_id'
WHERE r.source <> 'system'
ORDER BY r.subject_hash, r.purpose_id, r.decided_at DESC, r.sequence DESC
"""


def _decided_identities(cursor, profile_ids, *, linked_too: bool) -> tuple[dict, set]:
    """Decisions of these profiles' identifiers ({(profile, purpose): [State]}) and their
    (kind, hash, profile) pairs; `linked_too` includes identifiers already linked to the profile."""
    cursor.execute(_DECIDED_IDENTITIES, {"profiles": [str(p) for p in profile_ids], "all": linked_too})
    incoming, pairs = defaultdict(list), set()
    for kind, digest, profile_id, purpose_id, granted, decided_at, record_id in cursor.fetchall():
        incoming[(profile_id, purpose_id)].append(State(granted, decided_at, record_id))
        pairs.add((kind, bytes(digest), profile_id))
    return incoming, pairs


# The fold of `fold()` in one statement, for the many (profile, purpose) pairs a resolution batch
# touches: identifiers of these profiles with decisions not yet linked to them are linked;
# where their decisions and the profile's current state agree the newest stands (written when it
# changed), where they differ the rows come back so the caller records the conflict.
# Indexes: identity_profile_kind_idx (profile_id, kind), subject_consent_uniq, subject_link_uniq,
# profile_consent_uniq (profile_id, purpose_id).
_SYNC = """
WITH incoming AS (
    SELECT i.kind, i.value_hash AS hash, i.profile_id, c.purpose_id, c.granted, c.decided_at, c.record_id,
           false AS conflict
    FROM profiles_identity i
    JOIN consent_subjectconsent c ON c.subject_hash = i.value_hash AND c.subject_kind = i.kind
    LEFT JOIN consent_subjectlink l ON l.subject_hash = i.value_hash AND l.subject_kind = i.kind
    WHERE i.profile_id = ANY(%(profiles)s::uuid[]) AND l.profile_id IS DISTINCT FROM i.profile_id
), linked AS (
    INSERT INTO consent_subjectlink (subject_kind, subject_hash, profile_id, linked_at)
    SELECT DISTINCT ON (hash, kind) kind, hash, profile_id, %(now)s FROM incoming ORDER BY hash, kind
    ON CONFLICT (subject_hash, subject_kind) DO UPDATE SET profile_id = EXCLUDED.profile_id,
        linked_at = EXCLUDED.linked_at
    RETURNING 1
), states AS (
    SELECT profile_id, purpose_id, granted, decided_at, record_id, conflict FROM incoming
    UNION ALL
    SELECT pc.profile_id, pc.purpose_id, pc.granted, pc.decided_at, pc.record_id, pc.conflict
    FROM consent_profileconsent pc
    WHERE (pc.profile_id, pc.purpose_id) IN (SELECT profile_id, purpose_id FROM incoming)
), folded AS (
    SELECT profile_id, purpose_id, bool_and(granted) = bool_or(granted) AS agree,
           array_agg(DISTINCT record_id ORDER BY record_id) AS records
    FROM states GROUP BY profile_id, purpose_id
), newest AS (
    SELECT DISTINCT ON (s.profile_id, s.purpose_id) s.* FROM states s
    JOIN folded f ON f.profile_id = s.profile_id AND f.purpose_id = s.purpose_id AND f.agree
    ORDER BY s.profile_id, s.purpose_id, s.decided_at DESC, s.record_id DESC
), written AS (
    INSERT INTO consent_profileconsent (profile_id, purpose_id, granted, decided_at, record_id, conflict, updated_at)
    SELECT profile_id, purpose_id, granted, decided_at, record_id, conflict, %(now)s FROM newest
    ON CONFLICT (profile_id, purpose_id) DO UPDATE SET granted = EXCLUDED.granted,
        decided_at = EXCLUDED.decided_at, record_id = EXCLUDED.record_id, conflict = EXCLUDED.conflict,
        updated_at = EXCLUDED.updated_at
    WHERE (consent_profileconsent.granted, consent_profileconsent.decided_at, consent_profileconsent.record_id,
           consent_profileconsent.conflict)
          IS DISTINCT FROM (EXCLUDED.granted, EXCLUDED.decided_at, EXCLUDED.record_id, EXCLUDED.conflict)
    RETURNING 1
)
SELECT profile_id, purpose_id, records, (SELECT count(*) FROM linked), (SELECT count(*) FROM written)
FROM folded WHERE NOT agree
UNION ALL SELECT NULL, NULL, NULL, (SELECT count(*) FROM linked), (SELECT count(*) FROM written)
"""


def consent_identities_sync(*, profile_ids) -> list[FoldConflict]:
    """Set-based `consent_profiles_sync` (one statement for any number of profiles): link these
    profiles' identifiers that carry decisions and fold those decisions into the profiles."""
    profile_ids = sorted({str(p) for p in profile_ids})
    if not profile_ids:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ledger.LEDGER_LOCK])
        cursor.execute(_SYNC, {"profiles": profile_ids, "now": datetime.now(UTC)})
        conflicts = [(profile_id, purpose_id, tuple(records))
                     for profile_id, purpose_id, records, _, _ in cursor.fetchall() if profile_id is not None]
        return _conflicts_record(sorted(conflicts, key=lambda c: (str(c[0]), c[1])), reason="link", actor_id=None)


def consent_merges_fold(*, merges, actor_id: int | None = None) -> list[FoldConflict]:
    """`consent_profiles_merge` for many merges at once, given as (survivor, absorbed) pairs:
    merges never widen consent. Call inside the merge transaction, after identities moved."""
    pairs = [(UUID(str(s)), UUID(str(a))) for s, a in merges if str(s) != str(a)]
    if not pairs:
        return []
    survivor_of = {absorbed: survivor for survivor, absorbed in pairs}
    survivors = sorted(set(survivor_of.values()), key=str)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ledger.LEDGER_LOCK])
        current = _profile_states(cursor, survivors)
        incoming = defaultdict(list)
        for (profile_id, purpose_id), states in _profile_states(cursor, list(survivor_of)).items():
            incoming[(survivor_of[profile_id], purpose_id)].extend(states)
        # Index subject_link_profile_idx (profile_id).
        cursor.execute("UPDATE consent_subjectlink l SET profile_id = m.survivor "
                       "FROM unnest(%s::uuid[], %s::uuid[]) AS m(absorbed, survivor) WHERE l.profile_id = m.absorbed",
                       [[str(a) for a in survivor_of], [str(s) for s in survivor_of.values()]])
        cursor.execute("DELETE FROM consent_profileconsent WHERE profile_id = ANY(%s::uuid[])",
                       [[str(a) for a in survivor_of]])
        conflicts = _fold_into_profiles(current, incoming, reason="merge", actor_id=actor_id)
        return conflicts + consent_identities_sync(profile_ids=survivors)


def consent_profiles_split(*, keeper_id, part_ids, actor_id: int | None = None) -> list[FoldConflict]:
    """Un-merge: each part's consent is re-derived from its own decisions (its identifiers', and
    its profile id's own staff decisions), never inherited from the profile it left, so a split
    grants nothing a part's person did not grant. Call after identities moved to the parts.

    The kept profile is re-derived only when decided identifiers left it; otherwise its state
    (the person's newest decisions, open conflicts) stands. A part whose own decisions differ
    gets the most restrictive state with the conflict recorded, as a merge would."""
    keeper = UUID(str(keeper_id))
    others = [UUID(str(p)) for p in part_ids if UUID(str(p)) != keeper]
    if not others:
        return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ledger.LEDGER_LOCK])
        # Links follow identifiers to their part; revived profiles take their profile-id subject back.
        # Indexes: subject_link_profile_idx, identity_kind_value_uniq (kind, value_hash).
        cursor.execute("UPDATE consent_subjectlink l SET profile_id = i.profile_id FROM profiles_identity i "
                       "WHERE l.profile_id = %s AND i.kind = l.subject_kind AND i.value_hash = l.subject_hash "
                       "AND i.profile_id = ANY(%s::uuid[])", [str(keeper), [str(p) for p in others]])
        moved = cursor.rowcount
        cursor.execute("UPDATE consent_subjectlink l SET profile_id = s.profile_id "
                       "FROM unnest(%s::bytea[], %s::uuid[]) AS s(hash, profile_id) "
                       "WHERE l.subject_kind = %s AND l.subject_hash = s.hash AND l.profile_id = %s",
                       [[profile_subject_hash(p) for p in others], [str(p) for p in others], PROFILE_SUBJECT,
                        str(keeper)])
        moved += cursor.rowcount
        return _rederive(cursor, others + ([keeper] if moved else []), actor_id=actor_id)


def _rederive(cursor, profile_ids: list[UUID], *, actor_id: int | None) -> list[FoldConflict]:
    """Replace these profiles' state by the fold of their own decisions (see consent_profiles_split)."""
    cursor.execute("DELETE FROM consent_profileconsent WHERE profile_id = ANY(%s::uuid[])",
                   [[str(p) for p in profile_ids]])
    incoming, pairs = _decided_identities(cursor, profile_ids, linked_too=True)
    cursor.execute(_PROFILE_SUBJECT_DECISIONS, [[profile_subject_hash(p) for p in profile_ids],
                                                [str(p) for p in profile_ids]])
    for profile_id, purpose_id, granted, decided_at, sequence in cursor.fetchall():
        incoming[(profile_id, purpose_id)].append(State(granted, decided_at, sequence))
        pairs.add((PROFILE_SUBJECT, profile_subject_hash(profile_id), profile_id))
    if pairs:
        _link_upsert(cursor, sorted(pairs, key=lambda p: (p[1], p[0])), datetime.now(UTC))
    return _fold_into_profiles({}, incoming, reason="split", actor_id=actor_id)
