"""Celery entry points of the profiles app."""

from datetime import date

from celery import shared_task

from profiles.imports.tasks import (  # noqa: F401 - registers the tasks
    import_files_expire_task,
    import_run_task,
    imports_stale_fail_task,
)
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


# --- identity resolution (profiles/identity/)

@shared_task(name="profiles.identity_resolve_pending", time_limit=900, soft_time_limit=840, ignore_result=True)
def identity_resolve_pending_task(source_id: int | None = None) -> dict:
    """Attach unresolved events to profiles in bounded batches; re-enqueue while work remains.

    Sent after every ingestion commit (cdp.hooks.events_ingested) and every minute by beat as a
    safety net. Duplicates are harmless: batches are claimed with SKIP LOCKED, so a second run
    takes other events or finds none. `source_id` is informational (every source's events go).
    """
    from profiles.identity.resolve import identity_resolve_pending

    result = identity_resolve_pending()
    if result.more:
        identity_resolve_pending_task.apply_async(kwargs={"source_id": source_id})
    return {"batches": result.batches, "events": result.events, "more": result.more}


@shared_task(name="profiles.identity_graph_rebuild", time_limit=3600, ignore_result=True)
def identity_graph_rebuild_task(dry_run: bool = False) -> dict:
    """Recompute every identity component with SciPy and repair disagreements (nightly)."""
    from profiles.identity.rebuild import identity_graph_rebuild

    run = identity_graph_rebuild(dry_run=dry_run)
    return {"run": run.id, "components": run.components, "identities_moved": run.identities_moved}
