"""Who may do what with segments.

Marketers create segments and work on their own and on those shared with them; the data team
and compliance read every segment; admins do everything. Sharing is per object with
django-guardian: the owner grants view or change to a user or a group. Guardian is consulted in
exactly one predicate (`has_guardian_grant`).
"""

import rules

from cdp.roles import has_any_role, is_admin, is_compliance_officer, is_data_team, is_marketer


@rules.predicate
def is_owner(user, segment) -> bool:
    return segment is not None and segment.owner_id == user.pk


def _guardian_grant(codenames: tuple[str, ...]):
    @rules.predicate
    def has_guardian_grant(user, segment) -> bool:
        if segment is None:
            return False
        from guardian.core import ObjectPermissionChecker

        granted = set(ObjectPermissionChecker(user).get_perms(segment))
        return bool(granted & set(codenames))

    return has_guardian_grant


has_view_grant = _guardian_grant(("view_segment", "change_segment"))
has_change_grant = _guardian_grant(("change_segment",))
reads_everything = is_admin | is_data_team | is_compliance_officer

can_view = has_any_role & (reads_everything | is_owner | has_view_grant)
can_change = has_any_role & (is_admin | (is_marketer & is_owner) | has_change_grant)
can_administer = is_admin | (is_marketer & is_owner)

rules.add_perm("segments.browse", has_any_role)
rules.add_perm("segments.create", is_admin | is_marketer)
rules.add_perm("segments.view", can_view)
rules.add_perm("segments.change", can_change)
rules.add_perm("segments.recompute", can_change)
rules.add_perm("segments.archive", can_administer)
rules.add_perm("segments.share", can_administer)
# Members' personal fields unmasked: roles that handle personal data anyway.
rules.add_perm("segments.view_personal_data", reads_everything)
rules.add_perm("segments.export", can_view)
