"""Per-object sharing (django-guardian) for objects with an `owner`: segments, content blocks.

The owner may grant `view` or `change` on one object to a user or a group; guardian stores the
grant. This module is the only place that consults guardian (house rule): apps compose the
predicates into their rules.py and filter list querysets with `objects_visible_to`.

    can_change = is_admin | (is_marketer & object_permitted("change"))
    rules.add_perm("segments.change_segment", can_change)
"""

import rules
from django.contrib.auth.models import Group
from django.db.models import Q, QuerySet
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm

ACTIONS = ("view", "change")


def _codename(action: str, model) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown sharing action {action!r}; use one of {ACTIONS}")
    return f"{action}_{model._meta.model_name}"


@rules.predicate
def is_object_owner(user, obj) -> bool:
    return obj is not None and user is not None and user.is_authenticated and \
        getattr(obj, "owner_id", None) == user.pk


def object_shared(action: str) -> rules.Predicate:
    """True if a guardian grant of `action` on the object reaches the user (directly or
    through one of the user's groups). `change` implies `view`."""

    @rules.predicate(name=f"object_shared_{action}")
    def predicate(user, obj) -> bool:
        if obj is None or user is None or not user.is_authenticated or not user.is_active:
            return False
        from guardian.core import ObjectPermissionChecker

        checker = ObjectPermissionChecker(user)
        actions = ("view", "change") if action == "view" else ("change",)
        return any(checker.has_perm(_codename(a, type(obj)), obj) for a in actions)

    return predicate


def object_permitted(action: str) -> rules.Predicate:
    """The owner, or someone the object was shared with for `action`."""
    return is_object_owner | object_shared(action)


def objects_visible_to(user, queryset: QuerySet, action: str = "view") -> QuerySet:
    """The objects of `queryset` the user owns or was granted `action` on (list endpoints)."""
    if not user.is_authenticated:
        return queryset.none()
    actions = ("view", "change") if action == "view" else ("change",)
    granted = get_objects_for_user(user, [_codename(a, queryset.model) for a in actions], queryset,
                                   any_perm=True, accept_global_perms=False, with_superuser=False)
    return queryset.filter(Q(owner_id=user.pk) | Q(pk__in=granted.values("pk")))


def object_share(obj, *, to, action: str) -> None:
    """Grant `action` on `obj` to a user or a group (idempotent)."""
    if not isinstance(to, Group) and not getattr(to, "is_authenticated", False):
        raise ValueError("share with a user or a group")
    assign_perm(_codename(action, type(obj)), to, obj)


def object_unshare(obj, *, to, action: str) -> None:
    remove_perm(_codename(action, type(obj)), to, obj)
