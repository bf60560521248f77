"""First-start chores shared by `make run` and the production entrypoint."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from cdp.env import env_str


def admin_username() -> str:
    return env_str("CDP_ADMIN_USERNAME", "admin")


@transaction.atomic
def admin_ensure() -> str | None:
    """Create the admin superuser if missing; return its generated password (None otherwise).

    With CDP_ADMIN_PASSWORD set, that password is used (and re-applied on every start, so
    changing the variable changes the password). Otherwise a random one is generated once and
    returned for printing; it is never stored anywhere but as Django's password hash.
    """
    User = get_user_model()
    configured = env_str("CDP_ADMIN_PASSWORD")
    user = User.objects.filter(username=admin_username()).first()
    if user is None:
        password = configured or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=admin_username(), email="", password=password)
        return None if configured else password
    if configured and not user.check_password(configured):
        user.set_password(configured)
        user.save(update_fields=["password"])
    return None


def demo_data_load_if_empty(*, out) -> bool:
    """Load `CDP_DEMO_PROFILES` demo profiles into an empty database; True if loaded."""
    from profiles.demo.generator import DemoOptions, demo_generate
    from profiles.models import Profile

    if settings.CDP_DEMO_PROFILES <= 0 or Profile.objects.exists():
        return False
    out.write(f"• Loading demo data: {settings.CDP_DEMO_PROFILES:,} profiles over {settings.CDP_DEMO_DAYS} days …\n")
    out.flush()
    result = demo_generate(options=DemoOptions(profiles=settings.CDP_DEMO_PROFILES, days=settings.CDP_DEMO_DAYS))
    counts = result.counts
    out.write(f"• Demo data loaded in {result.seconds:.0f} s: {counts['profiles']:,} profiles, "
              f"{counts['events']:,} events, {counts['transactions']:,} transactions\n")
    from consent.demo import demo_consent_generate

    out.write(f"• Demo consent: {demo_consent_generate():,} ledger records\n")
    out.write(f"• Demo segments: {demo_segments_create()} from the templates (the worker computes them first)\n")
    return True


@transaction.atomic
def demo_segments_create() -> int:
    """One segment per template, so the marketer's screens start with sizes, history and overlap;
    each first recompute is queued after commit for the worker."""
    from segments.presets import PRESETS, preset_definition
    from segments.services.definitions import segment_create

    for preset in PRESETS.values():
        segment_create(actor=None, key=preset.key, name=preset.name, description=preset.description,
                       definition=preset_definition(preset.key), schedule_minutes=preset.schedule_minutes)
    return len(PRESETS)
