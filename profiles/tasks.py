"""Celery entry points of the profiles app."""

from datetime import date

from celery import shared_task

from profiles.imports.tasks import import_run_task, imports_stale_fail_task  # noqa: F401 - registers the tasks
from profiles.partitions import event_partitions_ahead
from profiles.traits.tasks import computed_traits_rebuild_task, computed_traits_refresh  # noqa: F401


@shared_task(time_limit=300)
def event_partitions_ensure_task(months_ahead: int = 3, today: str | None = None) -> list[str]:
    """Keep monthly event partitions created ahead of time (`today`: ISO date, default today)."""
    return event_partitions_ahead(months_ahead=months_ahead, today=date.fromisoformat(today) if today else None)


@shared_task(bind=True, time_limit=600)
def event_dedupe_purge_task(self) -> int:
    """Purge message-id dedupe rows older than the window; re-enqueue while more remain."""
    from profiles.ingestion.services import event_dedupe_purge

    deleted, more = event_dedupe_purge()
    if more:
        self.apply_async(countdown=1)
    return deleted
