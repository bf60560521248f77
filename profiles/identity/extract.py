"""The identifiers and edges one message carries, normalised, filtered and hashed.

Deterministic rules (IdentityLink.Rule):
- `same_message`     anonymousId and userId in one message
- `identify_traits`  email / phone in identify traits, linked to the message's main identifier
- `alias`            previousId -> userId (previousId is a user id if we know it as one, else an
                     anonymous id; decided in `resolve`, which can see the graph)
The main identifier of a message (where its event is attached) is its userId, else its
anonymousId. Values are normalised with profiles/identifiers.py, dropped when blocked, and
matched on keyed hashes; nothing here touches the database. The resolver applies these rules in
SQL over whole batches and uses `IdentifierCache` for the per-identifier part; `Extractor` serves
code that looks at a few messages at a time (un-merge placing events).
"""

from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings

from profiles.identifiers import identity_hash, normalize, stored_value
from profiles.identity.blocklist import Blocklist
from profiles.models import Identity, IdentityLink

Kind = Identity.Kind
Rule = IdentityLink.Rule
# An alias's previousId before the resolver decides its kind.
PREVIOUS = "previous"


class Node(NamedTuple):
    """A node of the graph as the resolver sees it (a tuple: hashed and compared in C)."""

    kind: str
    value_hash: bytes

    def __repr__(self):  # never print identifiers, not even hashed ones, in full
        return f"Node({self.kind}, {self.value_hash[:4].hex()}…)"


@dataclass
class MessageIdentifiers:
    primary: Node | None = None
    nodes: dict[Node, str] = field(default_factory=dict)  # node -> normalised value
    edges: list[tuple[Node, Node, str]] = field(default_factory=list)
    previous: str | None = None  # alias previousId (normalised), kind decided later


class Extractor:
    """Extract identifiers from messages; caches hashes (a batch repeats the same ids a lot)."""

    def __init__(self, blocklist: Blocklist):
        self.blocklist = blocklist
        # (kind, raw) -> (value, hash), or (None, blocking row id), or None (unusable)
        self._cache: dict[tuple[str, str], tuple | None] = {}

    def node(self, kind: str, raw) -> tuple[Node, str] | None:
        """The node for a raw identifier, or None when it is absent, malformed or blocked."""
        if raw is None or raw == "":
            return None
        key = (kind, raw if isinstance(raw, str) else str(raw))
        if key not in self._cache:
            value = normalize(kind, key[1])
            row = self.blocklist.match(kind, value) if value is not None else None
            self._cache[key] = None if value is None else (None, row) if row is not None else (
                value, identity_hash(kind, value))
        cached = self._cache[key]
        if cached is None:
            return None
        if cached[0] is None:
            self.blocklist.hits[cached[1]] += 1  # count every message a blocked value was dropped from
            return None
        return Node(kind, cached[1]), cached[0]

    def message(self, *, type: str, user_id: str, anonymous_id: str, previous_id: str = "",
                email=None, phone=None) -> MessageIdentifiers:
        result = MessageIdentifiers()
        user = self.node(Kind.USER_ID, user_id)
        anonymous = self.node(Kind.ANONYMOUS_ID, anonymous_id)
        for found in (user, anonymous):
            if found:
                result.nodes[found[0]] = found[1]
        result.primary = user[0] if user else anonymous[0] if anonymous else None
        if user and anonymous:
            result.edges.append((anonymous[0], user[0], Rule.SAME_MESSAGE))
        if type == "identify" and result.primary is not None:
            for kind, raw in ((Kind.EMAIL, email), (Kind.PHONE, phone)):
                found = self.node(kind, raw) if isinstance(raw, str | int) else None
                if found:
                    result.nodes[found[0]] = found[1]
                    result.edges.append((result.primary, found[0], Rule.IDENTIFY_TRAITS))
        if type == "alias" and user and previous_id:
            # Blocked or malformed either way: check as an anonymous id (the usual case).
            previous = self.node(Kind.ANONYMOUS_ID, previous_id)
            if previous and previous[0] != anonymous_node(anonymous):
                result.previous = previous[1]
        return result


def anonymous_node(found):
    return found[0] if found else None


class IdentifierCache:
    """Normalised value, stored value, keyed hash and blocking row of raw identifiers, kept
    across batches: a site's visitors come back, so most identifiers of a batch were seen in an
    earlier one. Valid for one blocklist and one hash key (see `identifier_cache`)."""

    MAX_ENTRIES = 2_000_000

    def __init__(self, blocklist: Blocklist, signature):
        self.blocklist = blocklist
        self.signature = signature
        self.entries: dict[tuple[str, str], tuple] = {}

    def get(self, kind: str, raw: str) -> tuple:
        """(value, stored value, hash, blocking row id); value and hash None when unusable."""
        key = (kind, raw)
        found = self.entries.get(key)
        if found is None:
            if len(self.entries) >= self.MAX_ENTRIES:
                self.entries.clear()
            value = normalize(kind, raw)
            row = self.blocklist.match(kind, value) if value is not None else None
            if value is None or row is not None:
                found = (None, None, None, row)
            else:
                found = (value, stored_value(kind, value), identity_hash(kind, value), None)
            self.entries[key] = found
        return found

    def previous(self, raw: str) -> tuple[tuple, tuple]:
        """An alias's previousId read as a user id and as an anonymous id. Blocked or malformed
        as an anonymous id (the usual case) means unusable either way."""
        as_anonymous = self.get(Kind.ANONYMOUS_ID, raw)
        if as_anonymous[2] is None:
            return as_anonymous, as_anonymous
        value = as_anonymous[0]
        return (value, value, identity_hash(Kind.USER_ID, value), None), as_anonymous


_cache: IdentifierCache | None = None


def identifier_cache(blocklist: Blocklist) -> IdentifierCache:
    """The process's cache, renewed when the blocked values or the hash key change."""
    global _cache
    signature = (settings.CDP_HASH_KEY, tuple(sorted(blocklist.exact.items())),
                 tuple((kind, pattern.pattern, row) for kind, pattern, row in blocklist.patterns))
    if _cache is None or _cache.signature != signature:
        _cache = IdentifierCache(blocklist, signature)
    _cache.blocklist = blocklist  # hits are counted on the current batch's blocklist
    return _cache
