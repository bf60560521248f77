""""Why are these one person?": the path of links joining two identifiers.

Breadth-first over the links, one set-based query per level (the index identitylink_uniq leads
with identity_a_id, identitylink_b_idx serves identity_b_id), so the answer is a shortest
chain of evidence. Active links first; when no active path exists the search is repeated over
all links, which explains why two identifiers are *not* one person (a refused or deactivated
link, with its reason).
"""

from dataclasses import dataclass

from django.db import connection

from profiles.models import Identity, IdentityLink

MAX_DEPTH = 12
MAX_VISITED = 20000


@dataclass
class Path:
    identities: list  # Identity, in order from the first to the second
    links: list  # IdentityLink between consecutive identities
    active: bool  # every link on the path is active

    @property
    def steps(self):
        return list(zip(self.links, self.identities[1:], strict=True))


_NEIGHBOURS = ("SELECT id, identity_a_id, identity_b_id FROM profiles_identitylink WHERE identity_a_id = ANY(%s) "
               "AND (is_active OR NOT %s) UNION ALL SELECT id, identity_b_id, identity_a_id FROM profiles_identitylink "
               "WHERE identity_b_id = ANY(%s) AND (is_active OR NOT %s)")


def _neighbours(cursor, frontier: list[int], active_only: bool) -> list[tuple[int, int, int]]:
    cursor.execute(_NEIGHBOURS, [frontier, active_only, frontier, active_only])
    return cursor.fetchall()


def _search(start: int, goal: int, active_only: bool) -> list[int] | None:
    """Link ids of a shortest path from start to goal, or None."""
    came_from = {start: None}  # identity -> (link, previous identity)
    frontier = [start]
    with connection.cursor() as cursor:
        for _ in range(MAX_DEPTH):
            if not frontier or len(came_from) > MAX_VISITED:
                return None
            following = []
            for link_id, here, there in sorted(_neighbours(cursor, frontier, active_only)):
                if there not in came_from:
                    came_from[there] = (link_id, here)
                    following.append(there)
            if goal in came_from:
                links, node = [], goal
                while came_from[node] is not None:
                    link_id, node = came_from[node]
                    links.append(link_id)
                return links[::-1]
            frontier = following
    return None


def identity_path(*, start: Identity, goal: Identity) -> Path | None:
    """A shortest path of links from `start` to `goal` (active if any), or None."""
    if start.id == goal.id:
        return Path([start], [], True)
    for active_only in (True, False):
        link_ids = _search(start.id, goal.id, active_only)
        if link_ids is not None:
            links = {link.id: link for link in IdentityLink.objects.filter(id__in=link_ids).select_related(
                "source", "deactivated_by")}
            ordered = [links[i] for i in link_ids]
            identities, current = [start], start.id
            others = {}
            for link in ordered:
                current = link.identity_b_id if link.identity_a_id == current else link.identity_a_id
                others[current] = None
                identities.append(current)
            found = Identity.objects.in_bulk(list(others))
            return Path([start] + [found[i] for i in identities[1:]], ordered, all(link.is_active for link in ordered))
    return None
