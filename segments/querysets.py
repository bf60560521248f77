"""Visibility of segments: who sees which rows in lists (object checks alone leak through lists)."""

from django.db import models

from cdp.roles import COMPLIANCE_OFFICER, DATA_TEAM, ROLES


class SegmentQuerySet(models.QuerySet):
    def visible_to(self, user) -> "SegmentQuerySet":
        """Admins, the data team and compliance read every segment; anyone else sees the
        segments they own and those shared with them (or a group of theirs) via guardian."""
        if not user or not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if not roles:
            return self.none()
        if roles & {DATA_TEAM, COMPLIANCE_OFFICER}:
            return self
        from guardian.shortcuts import get_objects_for_user

        shared = get_objects_for_user(user, ["segments.view_segment", "segments.change_segment"], klass=self.model,
                                      any_perm=True, with_superuser=False, accept_global_perms=False)
        return self.filter(models.Q(owner=user) | models.Q(pk__in=shared.values("pk")))
