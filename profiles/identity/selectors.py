"""Reads for the profile explorer: the graph around a profile, its timeline, its merge history,
flagged cases, identifier lookup."""

from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Q

from profiles.identifiers import readable_value, search_candidates
from profiles.identity.store import json_value
from profiles.models import (
    BlockedIdentifier,
    Identity,
    IdentityFlag,
    IdentityLink,
    Profile,
    ProfileMerge,
    Source,
    TransactionItem,
)


def identity_label(identity: Identity) -> str:
    return f"{identity.get_kind_display()}: {readable_value(identity)}"


def profile_graph(*, profile: Profile) -> dict:
    """The profile's identities and every link touching them (active, refused, deactivated)."""
    identities = list(profile.identities.select_related("source").order_by("kind", "first_seen_at", "id"))
    for identity in identities:
        identity.readable = readable_value(identity)
    ids = [identity.id for identity in identities]
    links = list(IdentityLink.objects.filter(Q(identity_a_id__in=ids) | Q(identity_b_id__in=ids))
                 .select_related("identity_a", "identity_b", "source", "deactivated_by")
                 .order_by("-is_active", "first_seen_at", "id"))
    mine = set(ids)
    for link in links:
        link.label_a, link.label_b = identity_label(link.identity_a), identity_label(link.identity_b)
        outside = [i for i in (link.identity_a, link.identity_b) if i.id not in mine]
        link.other_profile_id = outside[0].profile_id if outside else None
        link.can_unmerge = link.is_active and not outside
    return {"identities": identities, "links": links}


def profile_merge_history(*, profile: Profile) -> list[ProfileMerge]:
    """Merges into and splits of this profile, and the merge that absorbed it if any, newest first."""
    entries = list(ProfileMerge.objects.filter(Q(profile=profile) | Q(other_profile=profile))
                   .select_related("link", "actor").order_by("-created_at", "-id")[:200])
    for entry in entries:
        entry.can_unmerge = (entry.kind == ProfileMerge.Kind.MERGE and entry.undone_by_id is None
                             and entry.link is not None and entry.link.is_active and entry.profile_id == profile.id)
    return entries


@dataclass
class TimelineItem:
    kind: str  # "event" | "transaction"
    id: int
    timestamp: datetime
    type: str
    name: str
    source: str
    details: object
    anonymous_id: str = ""
    user_id: str = ""
    amount: object = None
    currency: str = ""
    items: list | None = None


# Index profiles_event_profile_name_ts (profile_id, ...) and transaction_profile_ts_idx.
_TIMELINE = """
SELECT * FROM (
    SELECT 'event' AS kind, e.id, e.timestamp, e.type, e.name, e.source_id, e.properties, e.anonymous_id,
           e.user_id, NULL::numeric AS amount, '' AS currency
    FROM profiles_event e WHERE e.profile_id = %(profile)s AND %(events)s
    UNION ALL
    SELECT 'transaction', t.id, t.timestamp, t.channel, t.order_id, t.source_id, NULL, '', '', t.amount, t.currency
    FROM profiles_transaction t WHERE t.profile_id = %(profile)s AND %(transactions)s
) timeline ORDER BY timestamp DESC, kind, id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
_TIMELINE_COUNT = """
SELECT (SELECT count(*) FROM profiles_event WHERE profile_id = %(profile)s AND %(events)s)
     + (SELECT count(*) FROM profiles_transaction WHERE profile_id = %(profile)s AND %(transactions)s)
"""


class ProfileTimeline:
    """Events and transactions of one profile, newest first, sliceable for Django's Paginator."""

    SHOW = ("all", "events", "transactions")

    def __init__(self, *, profile_id, show: str = "all"):
        self.params = {"profile": profile_id, "events": show in ("all", "events"),
                       "transactions": show in ("all", "transactions")}
        self._count = None

    def count(self) -> int:
        if self._count is None:
            with connection.cursor() as cursor:
                cursor.execute(_TIMELINE_COUNT, self.params)
                self._count = cursor.fetchone()[0]
        return self._count

    def __len__(self):
        return self.count()

    def __getitem__(self, window: slice) -> list[TimelineItem]:
        with connection.cursor() as cursor:
            cursor.execute(_TIMELINE, {**self.params, "limit": window.stop - window.start, "offset": window.start})
            rows = cursor.fetchall()
        sources = dict(Source.objects.values_list("id", "name"))
        items = [TimelineItem(kind, item_id, timestamp, type_, name, sources.get(source_id, "—"),
                              json_value(properties) or {}, anonymous_id, user_id, amount, currency)
                 for kind, item_id, timestamp, type_, name, source_id, properties, anonymous_id, user_id, amount,
                 currency in rows]
        transactions = {item.id: item for item in items if item.kind == "transaction"}
        for item in transactions.values():
            item.items = []
        for line in TransactionItem.objects.filter(transaction_id__in=list(transactions)).order_by("id"):
            transactions[line.transaction_id].items.append(line)
        return items


def identities_matching(text: str, kind: str = "") -> list[Identity]:
    """Identities an identifier typed by staff may mean (exact, on keyed hashes)."""
    condition = Q()
    for candidate_kind, value_hash in search_candidates(text):
        if not kind or kind == candidate_kind:
            condition |= Q(kind=candidate_kind, value_hash=value_hash)
    return list(Identity.objects.filter(condition).select_related("profile")) if condition else []


def identity_flags(*, status: str = "open", kind: str = ""):
    flags = IdentityFlag.objects.select_related("identity", "other_identity", "link", "resolved_by")
    if status:
        flags = flags.filter(status=status)
    if kind:
        flags = flags.filter(kind=kind)
    return flags.order_by("-last_seen_at", "-id")


def identity_flags_label(flags) -> list[IdentityFlag]:
    for flag in flags:
        flag.label = identity_label(flag.identity)
        flag.other_label = identity_label(flag.other_identity) if flag.other_identity else ""
    return flags


def identity_flag_counts() -> dict:
    return {"open": IdentityFlag.objects.filter(status=IdentityFlag.Status.OPEN).count()}


def blocked_identifiers():
    return BlockedIdentifier.objects.select_related("created_by").order_by("-is_active", "kind", "match", "value")
