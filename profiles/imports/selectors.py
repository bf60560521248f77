"""Read queries for the import screens and API: history, one job's progress and report."""

from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from profiles.imports import fields as F
from profiles.imports.progress import PHASE_LABELS, percent, rate_and_eta
from profiles.models import ImportJob, ImportMapping, ImportRowError, PendingMerge


def import_jobs_visible_to(user):
    """Jobs a user may see: every job for the roles that may browse imports, none otherwise."""
    if not user.has_perm("profiles.browse_imports"):
        return ImportJob.objects.none()
    return ImportJob.objects.select_related("source", "created_by", "mapping")


def import_job_list(*, user, query: str = "", status: str = "", kind: str = ""):
    jobs = import_jobs_visible_to(user)
    if query:
        jobs = jobs.filter(Q(file_name__icontains=query) | Q(source__name__icontains=query)
                           | Q(created_by__username__icontains=query))
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs.order_by("-created_at", "-id")


def import_mapping_list(*, kind: str = ""):
    mappings = ImportMapping.objects.all()
    return mappings.filter(kind=kind) if kind else mappings


@dataclass
class Progress:
    status: str
    status_label: str
    phase: str
    percent: int
    rows_done: int
    rows_total: int | None
    rate: float | None
    eta_seconds: float | None
    elapsed_seconds: float | None
    is_final: bool


def import_progress(*, job: ImportJob) -> Progress:
    elapsed = None
    if job.started_at:
        end = job.finished_at or timezone.now()
        elapsed = (end - job.started_at).total_seconds()
    rate = eta = None
    if job.status == ImportJob.Status.RUNNING and elapsed:
        rate, eta = rate_and_eta(rows_done=job.rows_done, rows_total=job.rows_total, elapsed=elapsed)
    elif job.status == ImportJob.Status.SUCCEEDED and elapsed:
        rate = job.rows_done / elapsed if elapsed > 0 else None
    return Progress(
        status=job.status, status_label=job.get_status_display(),
        phase=PHASE_LABELS.get(job.phase, job.phase) if job.status == ImportJob.Status.RUNNING else "",
        percent=percent(status=job.status, phase=job.phase, rows_done=job.rows_done, rows_total=job.rows_total),
        rows_done=job.rows_done, rows_total=job.rows_total, rate=rate, eta_seconds=eta, elapsed_seconds=elapsed,
        is_final=job.status in ImportJob.FINAL_STATUSES,
    )


def import_mapping_rows(*, job: ImportJob) -> list[dict]:
    """The mapping used, as readable pairs (for history and the report)."""
    return [{"header": header, "field": F.field_label(job.kind, target)}
            for header, target in job.columns.items() if target]


def import_report(*, job: ImportJob, errors_shown: int = 50) -> dict:
    return {
        "errors": list(ImportRowError.objects.filter(job=job).order_by("row_number", "id")[:errors_shown]),
        "error_count": ImportRowError.objects.filter(job=job).count(),
        "merges": list(PendingMerge.objects.filter(job=job).order_by("id")[:50]),
        "merge_count": PendingMerge.objects.filter(job=job).count(),
    }
