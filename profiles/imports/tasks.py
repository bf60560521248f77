"""Celery entry points of the import pipeline (discovered through profiles/tasks.py)."""

from celery import shared_task
from django.conf import settings

from profiles.imports import services


@shared_task(name="profiles.import_run", acks_late=True, time_limit=settings.CDP_IMPORT_TIME_LIMIT,
             soft_time_limit=settings.CDP_IMPORT_TIME_LIMIT - 30)
def import_run_task(job_id: int) -> str | None:
    """Run one queued import (idempotent: a job already claimed or finished is left alone)."""
    job = services.import_execute(job_id=job_id)
    return job.status if job else None


@shared_task(name="profiles.imports_stale_fail", time_limit=120)
def imports_stale_fail_task() -> int:
    """Mark imports whose worker died as failed (their transaction was rolled back)."""
    return services.imports_stale_fail()


@shared_task(name="profiles.import_files_expire", time_limit=600)
def import_files_expire_task() -> int:
    """Delete uploads of imports that finished more than CDP_IMPORT_FILE_DAYS ago."""
    return services.import_files_expire()
