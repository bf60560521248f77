"""Celery entry points of the consent app: ids in, one service call, done."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(time_limit=1800, acks_late=True)
def dsr_access_export_task(request_id: int) -> None:
    """Build the access export of one request (idempotent: a completed request is left alone)."""
    from consent.services.requests import dsr_access_export, dsr_access_failed

    try:
        dsr_access_export(request_id=request_id)
    except Exception as exc:
        logger.exception("access export failed", extra={"dsr_id": request_id})
        dsr_access_failed(request_id=request_id, reason=type(exc).__name__)
        raise


@shared_task(time_limit=600)
def ledger_head_export_task() -> str:
    """Write today's signed head hash of the consent ledger (beat, daily)."""
    from consent.services.ledger import ledger_head_export

    return str(ledger_head_export())


@shared_task(time_limit=3600)
def retention_enforce_task() -> int:
    """Apply retention rules in bounded batches; re-enqueue while any rule has more to do."""
    from consent.services.retention import retention_enforce

    runs = retention_enforce()
    if any(not run.finished for run in runs):
        retention_enforce_task.apply_async(countdown=5)
    return sum(run.deleted + run.profiles for run in runs)
