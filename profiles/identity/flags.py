"""Guard-rail cases: what the resolver refused to merge, and what staff decide about them.

- user id limit: an edge that would put more than CDP_IDENTITY_MAX_USER_IDS user ids into one
  profile is stored inactive and flagged (one flag per edge, counting how often it recurs);
- shared device: an anonymous id seen with more than CDP_IDENTITY_SHARED_DEVICE_USER_IDS user
  ids is not used for linking any more: its links are deactivated, its component recomputed
  (the device keeps its anonymous-only events on a profile of its own) and it is flagged.

Staff review flags on the flagged-cases screen: "link anyway" activates the refused edge and
merges (audited), "keep apart" closes the flag.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from cdp import hooks
from consent.services import audit_record
from profiles.identity import locks, store
from profiles.identity.extract import Node
from profiles.identity.merge import Merge, merges_apply
from profiles.models import Identity, IdentityFlag

Kind = Identity.Kind


def shared_devices_detect(cursor, pairs: list[tuple[Node, Node]]) -> tuple[set, dict]:
    """Anonymous ids of these same-message pairs that are shared devices: (all of them, the
    ones crossing the limit now -> distinct user ids seen)."""
    batch_users = {}
    for a, b in pairs:
        anonymous, user = (a, b) if a.kind == Kind.ANONYMOUS_ID else (b, a)
        batch_users.setdefault(anonymous, set()).add(user.value_hash)
    if not batch_users:
        return set(), {}
    hashes = [node.value_hash for node in batch_users]
    # identity_kind_value_uniq, then identitylink_uniq (a side) and identitylink_b_idx (b side).
    cursor.execute("""
        WITH anon AS (SELECT i.id, i.value_hash FROM profiles_identity i
                      JOIN unnest(%s::bytea[]) AS t(h) ON i.kind = 'anonymous_id' AND i.value_hash = t.h),
        other AS (SELECT anon.id, anon.value_hash, l.identity_b_id AS other_id FROM anon
                  JOIN profiles_identitylink l ON l.identity_a_id = anon.id AND l.rule = 'same_message'
                  UNION ALL
                  SELECT anon.id, anon.value_hash, l.identity_a_id FROM anon
                  JOIN profiles_identitylink l ON l.identity_b_id = anon.id AND l.rule = 'same_message')
        SELECT anon.value_hash, o.value_hash, f.id IS NOT NULL FROM anon
        LEFT JOIN other ON other.id = anon.id
        LEFT JOIN profiles_identity o ON o.id = other.other_id AND o.kind = 'user_id'
        LEFT JOIN profiles_identityflag f ON f.identity_id = anon.id AND f.kind = 'shared_device'
    """, [hashes])
    known_users, flagged = {}, set()
    for anon_hash, user_hash, is_flagged in cursor.fetchall():
        node = Node(Kind.ANONYMOUS_ID, bytes(anon_hash))
        if user_hash is not None:
            known_users.setdefault(node, set()).add(bytes(user_hash))
        if is_flagged:
            flagged.add(node)
    limit = settings.CDP_IDENTITY_SHARED_DEVICE_USER_IDS
    newly = {}
    for node, users in batch_users.items():
        count = len(users | known_users.get(node, set()))
        if node not in flagged and count > limit:
            newly[node] = count
    return flagged | set(newly), newly


def shared_devices_flag(cursor, counts: dict, *, now) -> int:
    """Flag these anonymous identities (id -> user id count) as shared devices; close the
    user-id-limit flags they caused (superseded)."""
    if not counts:
        return 0
    ids = list(counts)
    cursor.execute(
        "INSERT INTO profiles_identityflag (key, kind, status, identity_id, user_id_count, occurrences, first_seen_at, "
        "last_seen_at, resolution_note) SELECT 'shared_device:' || t.id, 'shared_device', 'open', t.id, t.n, 1, %s, %s, '' "
        "FROM unnest(%s::bigint[], %s::int[]) AS t(id, n) ON CONFLICT (key) DO UPDATE SET "
        "user_id_count = excluded.user_id_count, last_seen_at = excluded.last_seen_at",
        [now, now, ids, [counts[i] for i in ids]])
    flagged = cursor.rowcount
    cursor.execute("UPDATE profiles_identityflag SET status = 'dismissed', resolved_at = %s, "
                   "resolution_note = 'superseded: the anonymous id is a shared device' "
                   "WHERE kind = 'user_id_limit' AND status = 'open' AND (identity_id = ANY(%s) OR other_identity_id = ANY(%s))",
                   [now, ids, ids])
    return flagged


def refused_links_flag(cursor, refused: list[tuple], *, now) -> int:
    """Open a user-id-limit flag per link refused now, count again the ones refused before:
    rows of (link id, refused now)."""
    new = [link_id for link_id, refused_now in refused if refused_now]
    if new:
        cursor.execute(
            "INSERT INTO profiles_identityflag (key, kind, status, identity_id, other_identity_id, link_id, "
            "user_id_count, occurrences, first_seen_at, last_seen_at, resolution_note) "
            "SELECT 'user_id_limit:' || l.id, 'user_id_limit', 'open', l.identity_a_id, l.identity_b_id, l.id, 0, 1, "
            "l.first_seen_at, l.last_seen_at, '' FROM profiles_identitylink l WHERE l.id = ANY(%s) "
            "ON CONFLICT (key) DO UPDATE SET occurrences = profiles_identityflag.occurrences + 1, "
            "last_seen_at = GREATEST(profiles_identityflag.last_seen_at, excluded.last_seen_at)", [new])
    again = [link_id for link_id, refused_now in refused if not refused_now]
    if again:
        cursor.execute("UPDATE profiles_identityflag SET occurrences = occurrences + 1, last_seen_at = GREATEST("
                       "last_seen_at, %s) WHERE key = ANY(%s)", [now, [f"user_id_limit:{i}" for i in again]])
    return len(new)


# --- staff decisions --------------------------------------------------------------------------

class FlagError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class FlagResult:
    flag: IdentityFlag
    merged_into: object = None
    absorbed: object = None


def _open_flag(flag_id: int) -> IdentityFlag:
    flag = IdentityFlag.objects.select_for_update().filter(id=flag_id).first()
    if flag is None:
        raise FlagError("not_found", "That flag does not exist.")
    if flag.status != IdentityFlag.Status.OPEN:
        raise FlagError("closed", f"This case was already closed ({flag.get_status_display().lower()}).")
    return flag


@transaction.atomic
def identity_flag_dismiss(*, flag_id: int, actor, note: str) -> FlagResult:
    """Keep the identifiers apart and close the flag (audited)."""
    flag = _open_flag(flag_id)
    flag.status, flag.resolved_at, flag.resolved_by = IdentityFlag.Status.DISMISSED, timezone.now(), actor
    flag.resolution_note = note.strip()[:2000]
    flag.save(update_fields=["status", "resolved_at", "resolved_by", "resolution_note"])
    audit_record(actor=actor, action="identity.flag_dismissed", object_type="identity_flag", object_id=flag.id,
                 details={"kind": flag.kind})
    return FlagResult(flag)


@transaction.atomic
def identity_flag_link(*, flag_id: int, actor, note: str) -> FlagResult:
    """Staff decided the refused edge is right: activate it and merge the two profiles (audited)."""
    note = note.strip()
    if not note:
        raise FlagError("reason_required", "Give a reason for linking these identifiers.")
    flag = _open_flag(flag_id)
    if flag.kind != IdentityFlag.Kind.USER_ID_LIMIT or flag.link_id is None:
        raise FlagError("not_linkable", "Only a refused link can be linked; a shared device stays unlinked.")
    now = timezone.now()
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        locks.graph_lock_shared(cursor)
        survivor, absorbed = _lock_pair(cursor, flag.identity_id, flag.other_identity_id)
        cursor.execute("UPDATE profiles_identitylink SET is_active = true, deactivated_at = NULL, "
                       "deactivation_reason = '' WHERE id = %s", [flag.link_id])
        result = FlagResult(flag)
        if absorbed is not None:
            states = store.states_load(cursor, [survivor, absorbed])
            merge = Merge(absorbed, survivor, flag.link_id, "staff", states[survivor].to_snapshot())
            states[survivor].absorb(states[absorbed])
            merges_apply(cursor, merges=[merge], now=now, actor_id=actor.id, reason=note[:2000])
            store.states_write(cursor, [states[survivor]], now=now)
            hooks.profiles_changed(profile_ids=[survivor, absorbed], trait_names=states[survivor].trait_names())
            result.merged_into, result.absorbed = survivor, absorbed
    flag.status, flag.resolved_at, flag.resolved_by = IdentityFlag.Status.LINKED, now, actor
    flag.resolution_note = note[:2000]
    flag.save(update_fields=["status", "resolved_at", "resolved_by", "resolution_note"])
    audit_record(actor=actor, action="profile.merged", object_type="profile", object_id=result.merged_into or "",
                 details={"flag_id": flag.id, "link_id": flag.link_id,
                          "absorbed": str(result.absorbed) if result.absorbed else None, "reason": note[:500]})
    return result


def _lock_pair(cursor, identity_a: int, identity_b: int):
    """Lock the profiles of two identities (ascending id); (survivor, absorbed or None)."""
    for _ in range(20):
        cursor.execute("SELECT id, profile_id FROM profiles_identity WHERE id = ANY(%s)", [[identity_a, identity_b]])
        profiles = dict(cursor.fetchall())
        if len(profiles) != 2:
            raise FlagError("not_found", "One of the identifiers no longer exists.")
        locked = locks.profiles_lock(cursor, set(profiles.values()))
        cursor.execute("SELECT id, profile_id FROM profiles_identity WHERE id = ANY(%s)", [[identity_a, identity_b]])
        if dict(cursor.fetchall()) == profiles and all(row[1] is None for row in locked.values()):
            ids = set(profiles.values())
            if len(ids) == 1:
                return ids.pop(), None
            survivor = min(ids, key=lambda p: locks.survivor_key(p, locked[p][0], locked[p][2]))
            return survivor, (ids - {survivor}).pop()
    raise FlagError("busy", "The profiles keep changing; try again in a moment.")
