"""Incremental union-find over one batch: groups of identities, each knowing which existing
profiles it holds and how many user ids, so the guard rails can refuse an edge *before* it
joins two groups (an order-dependent decision SciPy's one-shot components cannot make)."""

from dataclasses import dataclass, field


@dataclass(slots=True)
class Group:
    profiles: list  # existing profile ids in the group
    user_ids: int = 0  # distinct user ids in the group
    size: int = 1
    # existing profile -> the edge that first joined it to another profile (the merge's cause)
    merge_edges: dict = field(default_factory=dict)


class UnionFind:
    def __init__(self):
        self.parent: dict = {}
        self.groups: dict = {}

    def add(self, key, *, profile=None, user_ids: int = 0) -> None:
        if key in self.parent:
            return
        self.parent[key] = key
        self.groups[key] = Group(profiles=[profile] if profile is not None else [], user_ids=user_ids)

    def find(self, key):
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:  # path compression
            self.parent[key], key = root, self.parent[key]
        return root

    def group(self, key) -> Group:
        return self.groups[self.find(key)]

    def union(self, a, b, edge) -> bool:
        """Join the groups of a and b; False when they already were one."""
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        big, small = (root_a, root_b) if self.groups[root_a].size >= self.groups[root_b].size else (root_b, root_a)
        keep, gone = self.groups[big], self.groups.pop(small)
        if keep.profiles and gone.profiles:
            for profile in keep.profiles + gone.profiles:
                keep.merge_edges.setdefault(profile, edge)
        keep.merge_edges.update({p: e for p, e in gone.merge_edges.items() if p not in keep.merge_edges})
        keep.profiles.extend(gone.profiles)
        keep.user_ids += gone.user_ids
        keep.size += gone.size
        self.parent[small] = big
        return True

    def roots(self):
        return self.groups.items()
