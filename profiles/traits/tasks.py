"""Celery entry points of computed traits (discovered through profiles/tasks.py)."""

from datetime import date

from celery import shared_task

from profiles.traits import services


@shared_task(name="profiles.computed_traits_refresh", time_limit=600, acks_late=True)
def computed_traits_refresh(profile_ids: list[str], as_of: str | None = None) -> int:
    """Recompute purchase traits and RFM of these profiles (sent by cdp.hooks.transactions_changed)."""
    result = services.computed_traits_refresh(profile_ids=profile_ids,
                                              as_of=date.fromisoformat(as_of) if as_of else None)
    return result.profiles


@shared_task(name="profiles.computed_traits_rebuild", time_limit=3600)
def computed_traits_rebuild_task(as_of: str | None = None) -> int:
    """Nightly full rebuild of purchase traits and RFM scores for every profile."""
    return services.computed_traits_rebuild(as_of=date.fromisoformat(as_of) if as_of else None).profiles
