"""Rectification from the profile screen (data team, admins).

`consent.services.requests.profile_rectify` validates, writes and audits (field names only).
Identity resolution then has to keep the correction: each corrected value's provenance becomes
"staff, now", so an older value arriving later with a merge or a replayed identify does not
bring the wrong value back, while a newer one from the person still wins (the precedence rule
of traits.py; a cleared value has no provenance). Segments hear about the change.
"""

from django.db import transaction
from django.utils import timezone

from cdp import hooks
from consent.services.requests import profile_rectify
from profiles.models import Profile, ProfileTraitSource


@transaction.atomic
def profile_rectify_by_staff(*, profile_id, changes: dict, actor) -> list[str]:
    """Correct personal fields of a live profile; returns the fields changed (audited)."""
    changed = profile_rectify(profile_id=profile_id, changes=changes, actor=actor)
    if not changed:
        return changed
    profile = Profile.objects.get(id=profile_id)
    now = timezone.now()
    ProfileTraitSource.objects.filter(profile_id=profile_id, name__in=changed).delete()
    ProfileTraitSource.objects.bulk_create([
        ProfileTraitSource(profile_id=profile_id, name=name, source=None, is_authoritative=False, observed_at=now)
        for name in changed if getattr(profile, name) not in (None, "")])
    hooks.profiles_changed(profile_ids=[profile_id], trait_names=changed)
    return changed
