"""Import operations: upload, configure (mapping), preview, start, run, cancel, retry.

A file is imported in ONE database transaction: staged with COPY, then merged with set-based
SQL (loading.py). A failure, a cancel or a worker killed half-way leaves the database exactly as
it was. Progress goes through a second connection (progress.py) so it is visible meanwhile.
"""

import csv
import gzip
import hashlib
import io
import logging
import shutil
import tempfile
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cdp import crypto, hooks
from consent.services import audit_record
from profiles.imports import fields as F
from profiles.imports import loading
from profiles.imports.cleaning import date_format_guess, decimal_comma_guess
from profiles.imports.digests import email_digests_backfill
from profiles.imports.formats import FileInfo, ImportFileError, detect, iter_chunks, sample_rows
from profiles.imports.mapping import MappingError, Plan, options_check, plan_build
from profiles.imports.progress import READING, ImportCancelled, ProgressReporter, Snapshot
from profiles.imports.validation import Prepared, chunk_prepare
from profiles.models import ImportJob, ImportMapping, ImportRowError, Source

logger = logging.getLogger(__name__)
RUN_TASK = "profiles.import_run"
HOOK_BATCH = 5000  # profile ids per computed-traits message
Status = ImportJob.Status


# --- upload ----------------------------------------------------------------------------------------

def _store(chunks: Iterable[bytes], file_name: str) -> tuple[Path, int, str]:
    folder = Path(settings.CDP_IMPORT_DIR) / uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    safe_name = Path(file_name).name.replace("\x00", "")[:200] or "upload"
    path = folder / safe_name
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "wb") as handle:
            for block in chunks:
                size += len(block)
                if size > settings.CDP_IMPORT_MAX_BYTES:
                    raise ImportFileError("too_large", f"The file is larger than the limit of "
                                                       f"{settings.CDP_IMPORT_MAX_BYTES / (1 << 30):.1f} GiB.")
                digest.update(block)
                handle.write(block)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise ImportFileError("empty_file", "The file is empty.")
    return path, size, digest.hexdigest()


def _file_chunks(path: Path, block: int = 4 << 20):
    with open(path, "rb") as handle:
        while data := handle.read(block):
            yield data


@transaction.atomic
def import_upload(*, user, source: Source, kind: str, file_name: str, chunks: Iterable[bytes] | None = None,
                  path: Path | None = None, mapping: ImportMapping | None = None) -> ImportJob:
    """Stream a file to CDP_IMPORT_DIR, detect its format and headers, suggest a mapping."""
    if kind not in F.KINDS:
        raise ImportFileError("invalid_kind", f"Kind must be one of {', '.join(F.KINDS)}.")
    stored, size, digest = _store(chunks if chunks is not None else _file_chunks(path), file_name)
    try:
        info = detect(stored)
    except ImportFileError:
        shutil.rmtree(stored.parent, ignore_errors=True)
        raise
    columns = F.mapping_suggest(kind=kind, headers=info.headers)
    options = {}
    if mapping is not None:
        columns.update({h: t for h, t in mapping.columns.items() if h in info.headers})
        options = dict(mapping.options)
    job = ImportJob.objects.create(
        kind=kind, source=source, file_name=Path(file_name).name[:255], file_path=str(stored), file_size=size,
        file_sha256=digest, file_format=info.format, encoding=info.encoding, delimiter=info.delimiter,
        headers=info.headers, columns=columns, options=options, mapping=mapping, created_by=user,
        rows_total=info.estimated_rows,
    )
    hints = import_hints(job=job, columns=columns)
    if not hints["date_candidates"]:  # an ambiguous file waits for the person to choose
        options.setdefault("date_format", hints["date_format"])
    options.setdefault("decimal_comma", hints["decimal_comma"])
    ImportJob.objects.filter(pk=job.pk).update(options=options)
    job.options = options
    audit_record(actor=user, action="import.uploaded", object_type="import", object_id=job.id,
                 details={"kind": kind, "bytes": size, "format": info.format})
    logger.info("import uploaded", extra={"job_id": job.id, "bytes": size, "format": info.format})
    return job


def file_info(job: ImportJob) -> FileInfo:
    return FileInfo(job.file_format, job.encoding, job.delimiter, job.headers, job.rows_total or 0)


def import_hints(*, job: ImportJob, columns: dict[str, str], sample: int = 2000) -> dict:
    """Guesses from the first rows: date format (and whether it is ambiguous), decimal comma."""
    chunk = sample_rows(Path(job.file_path), file_info(job), rows=sample)
    hints: dict = {"date_format": "iso", "date_candidates": [], "decimal_comma": False}
    date_values = []
    for header, target in columns.items():
        spec = F.fields_for(job.kind).get(target)
        if spec and spec.type in ("date", "datetime") and header in chunk.frame:
            date_values += list(chunk.frame[header])
        if spec and spec.type == "amount" and header in chunk.frame:
            hints["decimal_comma"] = decimal_comma_guess(list(chunk.frame[header]))
    if date_values:
        hints["date_format"], hints["date_candidates"] = date_format_guess(date_values)
    return hints


# --- mapping, preview, start ---------------------------------------------------------------------------

def import_plan(*, job: ImportJob, columns: dict[str, str] | None = None, options: dict | None = None) -> Plan:
    return plan_build(kind=job.kind, headers=job.headers, columns=job.columns if columns is None else columns,
                      options=job.options if options is None else options)


@transaction.atomic
def import_configure(*, job: ImportJob, user, columns: dict[str, str], options: dict,
                     save_as: str = "") -> ImportJob:
    """Store the mapping and options for a job (and as a named mapping when `save_as`)."""
    if job.status != Status.UPLOADED:
        raise MappingError(["This import has already started; its mapping can no longer change."])
    import_plan(job=job, columns=columns, options=options)  # raises MappingError listing every problem
    encoding_changed = options.get("encoding") and options["encoding"] != job.encoding
    delimiter_changed = options.get("delimiter") and options["delimiter"] != job.delimiter
    if encoding_changed or delimiter_changed:
        info = detect(Path(job.file_path), encoding=options.get("encoding", ""), delimiter=options.get("delimiter", ""))
        if info.headers != job.headers:
            raise MappingError(["With this encoding or delimiter the columns change: upload the file again."])
        job.encoding, job.delimiter = info.encoding, info.delimiter
    job.columns, job.options = columns, options
    if save_as:
        job.mapping = import_mapping_save(name=save_as, kind=job.kind, columns=columns, options=options, user=user)
    job.save(update_fields=["columns", "options", "mapping", "encoding", "delimiter"])
    return job


def import_mapping_save(*, name: str, kind: str, columns: dict, options: dict, user) -> ImportMapping:
    """Create or replace a named mapping (only mapped columns are kept)."""
    name = name.strip()[:120]
    if not name:
        raise MappingError(["Give the mapping a name."])
    problems = options_check(options)
    if problems:
        raise MappingError(problems)
    kept = {h: t for h, t in columns.items() if t}
    mapping, _ = ImportMapping.objects.update_or_create(
        name=name, defaults={"kind": kind, "columns": kept, "options": options, "created_by": user})
    return mapping


@dataclass
class PreviewRow:
    row_number: int
    values: list[str]
    errors: list[str]


def import_preview(*, job: ImportJob, columns: dict[str, str], options: dict, rows: int = 20) -> tuple[
        list[str], list[PreviewRow]]:
    """The first `rows` rows after mapping and cleaning, with each row's problems."""
    plan = import_plan(job=job, columns=columns, options=options)
    chunk = sample_rows(Path(job.file_path), file_info(job), rows=rows)
    prepared = chunk_prepare(chunk, plan, consent_check=True)
    targets = list(plan.columns.values())
    labels = [F.field_label(job.kind, t) for t in targets]
    problems: dict[int, list[str]] = {}
    for line in prepared.errors.itertuples(index=False):
        problems.setdefault(int(line.row_number), []).append(
            f"{line.column}: {line.reason}" if line.column else line.reason)
    result = []
    for position in range(len(prepared.frame)):
        number = int(prepared.frame["row_number"].iloc[position])
        values = [_display(prepared.frame[t].iloc[position]) for t in targets]
        result.append(PreviewRow(number, values, problems.get(number, [])))
    return labels, result


def _display(value) -> str:
    if value is None or (not isinstance(value, str) and _is_missing(value)):
        return ""
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text.replace("T00:00:00+00:00", "").replace("+00:00", " UTC")
    return str(value)


def _is_missing(value) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _ensure_date_choice(job: ImportJob, options: dict) -> None:
    if "date_format" in options:
        return
    hints = import_hints(job=job, columns=job.columns)
    if hints["date_candidates"]:
        raise MappingError([f"Dates in this file can be read as {' or '.join(hints['date_candidates'])}: "
                            "choose the date format."])
    options["date_format"] = hints["date_format"]


@transaction.atomic
def import_start(*, job: ImportJob, user, enqueue: bool = True) -> ImportJob:
    """Queue the import (the task is sent once this transaction commits; `enqueue=False` when
    the caller runs it itself, as the CLI does)."""
    options = dict(job.options)
    _ensure_date_choice(job, options)
    import_plan(job=job, options=options)
    updated = ImportJob.objects.filter(pk=job.pk, status=Status.UPLOADED).update(
        status=Status.QUEUED, queued_at=timezone.now(), options=options, cancel_requested=False)
    if not updated:
        raise MappingError(["This import has already been started."])
    audit_record(actor=user, action="import.started", object_type="import", object_id=job.id,
                 details={"kind": job.kind, "columns": len([t for t in job.columns.values() if t])})
    if enqueue:
        transaction.on_commit(lambda: current_app.send_task(RUN_TASK, kwargs={"job_id": job.id}))
    job.refresh_from_db()
    return job


@transaction.atomic
def import_retry(*, job: ImportJob, user) -> ImportJob:
    """Run a failed or cancelled import again from the start (nothing of it was loaded)."""
    if not job.file_path or not Path(job.file_path).exists():
        raise MappingError([f"The uploaded file is no longer kept ({job.file_removed_reason or 'removed'}); "
                            "upload it again to import it."])
    updated = ImportJob.objects.filter(pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED]).update(
        status=Status.QUEUED, queued_at=timezone.now(), cancel_requested=False, error_message="", rows_done=0,
        phase="", started_at=None, finished_at=None, backend_pid=None, backend_started_at=None)
    if not updated:
        raise MappingError(["Only a failed or cancelled import can be retried."])
    ImportRowError.objects.filter(job=job).delete()
    audit_record(actor=user, action="import.retried", object_type="import", object_id=job.id)
    transaction.on_commit(lambda: current_app.send_task(RUN_TASK, kwargs={"job_id": job.id}))
    job.refresh_from_db()
    return job


def import_cancel(*, job: ImportJob, user) -> ImportJob:
    """Cancel: a job not yet running stops at once; a running one rolls back within a moment."""
    now = timezone.now()
    if ImportJob.objects.filter(pk=job.pk, status__in=[Status.UPLOADED, Status.QUEUED]).update(
            status=Status.CANCELLED, cancel_requested=True, finished_at=now,
            error_message="Cancelled before it started; nothing was loaded."):
        audit_record(actor=user, action="import.cancelled", object_type="import", object_id=job.id)
    elif ImportJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(cancel_requested=True):
        audit_record(actor=user, action="import.cancelled", object_type="import", object_id=job.id)
        job.refresh_from_db()
        if job.backend_pid:
            # Interrupt a long SQL step too; the worker then rolls back and marks the job cancelled.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = %s "
                               "AND backend_start = %s", [job.backend_pid, job.backend_started_at])
    job.refresh_from_db()
    return job


# --- running ------------------------------------------------------------------------------------------

def import_execute(*, job_id: int, on_progress: Callable[[Snapshot], None] | None = None) -> ImportJob | None:
    """Run a queued import to the end in one transaction; None if another worker has it."""
    if not connection.in_atomic_block:
        # A fresh session: temp_buffers can only be raised before a session's first temp table.
        connection.close()
    now = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=Status.QUEUED, cancel_requested=False).update(
        status=Status.RUNNING, started_at=now, heartbeat_at=now, phase=READING, rows_done=0)
    if not claimed:
        logger.info("import not claimed (not queued)", extra={"job_id": job_id})
        return None
    job = ImportJob.objects.select_related("source").get(pk=job_id)
    reporter = ProgressReporter(job.id, callback=on_progress)
    began = time.monotonic()
    try:
        with transaction.atomic():
            _record_backend(reporter, job)
            counts = _import_file(job, reporter)
            _finish(job, counts, began)
        logger.info("import succeeded", extra={"job_id": job.id, **counts})
    except ImportCancelled:
        _fail(job, Status.CANCELLED, "Cancelled. The database was left exactly as before: nothing from this file "
                                     "was loaded.")
    except ImportFileError as exc:
        _fail(job, Status.FAILED, f"{exc.message} Nothing from this file was loaded.")
    except MappingError as exc:
        _fail(job, Status.FAILED, f"{'; '.join(exc.problems)} Nothing from this file was loaded.")
    except DatabaseError as exc:
        cancelled = reporter.cancel_requested()
        logger.warning("import stopped by the database", extra={"job_id": job.id, "error": type(exc).__name__,
                                                                "cancelled": cancelled})
        if cancelled:
            _fail(job, Status.CANCELLED, "Cancelled. The database was left exactly as before: nothing from this "
                                         "file was loaded.")
        else:
            _fail(job, Status.FAILED, f"The database refused the import ({type(exc).__name__}). Nothing from this "
                                      "file was loaded.")
    except Exception as exc:
        # Frames only: an exception's message can quote row values (personal data).
        logger.error("import failed", extra={"job_id": job.id, "error": type(exc).__name__,
                                             "where": "".join(traceback.format_tb(exc.__traceback__)[-4:])})
        _fail(job, Status.FAILED, f"Internal error ({type(exc).__name__}). Nothing from this file was loaded.")
    finally:
        reporter.close()
    job.refresh_from_db()
    return job


def _record_backend(reporter: ProgressReporter, job: ImportJob) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
        pid, started = cursor.fetchone()
    with reporter._connection.cursor() as cursor:
        cursor.execute("UPDATE profiles_importjob SET backend_pid = %s, backend_started_at = %s WHERE id = %s",
                       [pid, started, job.id])


class _ErrorWriter:
    """Report lines (values encrypted) spooled to a temporary file while the stage COPY owns the
    connection, then COPYed into profiles_importrowerror inside the import's transaction."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.rows: set[int] = set()
        # Closed by flush(); a failed import drops it with the process's garbage.
        self.spool = tempfile.SpooledTemporaryFile(max_size=32 << 20, mode="w+", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.spool, quoting=csv.QUOTE_ALL)  # "" stays an empty string, not NULL

    def add(self, lines: Iterable[tuple]) -> None:
        for row_number, column, value, reason in lines:
            self.rows.add(int(row_number))
            self.writer.writerow((self.job_id, int(row_number), str(column)[:255], crypto.encrypt(str(value or "")),
                                  str(reason)[:300]))

    def flush(self, cursor) -> None:
        self.spool.seek(0)
        with cursor.copy('COPY profiles_importrowerror (job_id, row_number, "column", value, reason) '
                         "FROM STDIN (FORMAT csv)") as copy:
            while block := self.spool.read(1 << 20):
                copy.write(block)
        self.spool.close()


def _import_file(job: ImportJob, reporter: ProgressReporter) -> dict:
    plan = import_plan(job=job)
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute("SET LOCAL client_connection_check_interval = '2s'")
        loading.session_prepare(cursor)
        if "email_sha256" in plan.targets:
            email_digests_backfill(cursor)
        errors = _ErrorWriter(job.id)
        rows_done = blank = 0
        reporter.update(rows_done=0, rows_total=job.rows_total, force=True)
        stager = loading.Stager(cursor, plan)
        try:
            for chunk in iter_chunks(Path(job.file_path), file_info(job), chunk_rows=settings.CDP_IMPORT_CHUNK_ROWS):
                prepared: Prepared = chunk_prepare(chunk, plan)
                stager.write(prepared.valid)
                errors.add(prepared.errors.itertuples(index=False, name=None))
                blank += prepared.blank_rows
                rows_done += len(chunk.frame) + len(chunk.bad_lines)
                reporter.update(rows_done=rows_done, rows_total=max(rows_done, job.rows_total or 0))
        except BaseException:
            stager.abort()
            raise
        stager.close()
        reporter.update(rows_done=rows_done, rows_total=rows_done, force=True)
        result, report = loading.load(cursor, plan, job_id=job.id, source_id=job.source_id,
                                      authoritative=job.source.is_authoritative, actor=job.created_by,
                                      on_phase=lambda phase: reporter.update(phase=phase))
        errors.add(report)
        errors.flush(cursor)
        if plan.kind == F.TRANSACTIONS:
            for batch in loading.touched_profile_batches(cursor.connection, HOOK_BATCH):
                hooks.transactions_changed(profile_ids=batch)
    duplicates = result.rows_duplicate
    return {"rows_total": rows_done - blank, "rows_loaded": result.rows_loaded,
            "rows_rejected": len(errors.rows) - duplicates, "rows_duplicate": duplicates,
            "profiles_matched": result.profiles_matched, "profiles_created": result.profiles_created,
            "transactions_created": result.transactions_created, "merges_requested": result.merge_pairs,
            "consents_recorded": result.consents}


def _finish(job: ImportJob, counts: dict, began: float) -> None:
    """Mark success inside the import's transaction: the job says "succeeded" only if the data is in."""
    fields = {k: v for k, v in counts.items() if k != "merges_requested"}
    ImportJob.objects.filter(pk=job.pk).update(status=Status.SUCCEEDED, finished_at=timezone.now(), phase="",
                                               rows_done=counts["rows_total"], heartbeat_at=timezone.now(),
                                               **fields)
    audit_record(actor=job.created_by, action="import.succeeded", object_type="import", object_id=job.id,
                 details={**counts, "seconds": round(time.monotonic() - began, 1)})


def _fail(job: ImportJob, status: str, message: str) -> None:
    ImportJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
        status=status, error_message=message, finished_at=timezone.now(), phase="", backend_pid=None)
    audit_record(actor=job.created_by, action=f"import.{status}", object_type="import", object_id=job.id)
    logger.info("import ended without loading", extra={"job_id": job.id, "status": status})


# --- liveness --------------------------------------------------------------------------------------------

def import_liveness_check(*, job: ImportJob) -> ImportJob:
    """A running job whose database session is gone (worker killed) or that stopped reporting is
    marked failed: its transaction rolled back, so nothing of it was loaded."""
    if job.status != Status.RUNNING:
        return job
    stale = job.heartbeat_at and job.heartbeat_at < timezone.now() - timedelta(
        seconds=settings.CDP_IMPORT_STALE_SECONDS)
    gone = False
    if job.backend_pid:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND backend_start = %s",
                           [job.backend_pid, job.backend_started_at])
            gone = cursor.fetchone() is None
    if gone or stale:
        ImportJob.objects.filter(pk=job.pk, status=Status.RUNNING, backend_pid=job.backend_pid).update(
            status=Status.FAILED, finished_at=timezone.now(), phase="",
            error_message="The worker stopped while importing. Its transaction was rolled back: the database "
                          "was left exactly as before and nothing from this file was loaded. Retry to run it again.")
        logger.warning("import worker lost", extra={"job_id": job.id, "stale": bool(stale)})
        job.refresh_from_db()
    return job


def imports_stale_fail() -> int:
    """Beat: check every running import (see import_liveness_check); returns how many failed."""
    failed = 0
    for job in ImportJob.objects.filter(status=Status.RUNNING):
        failed += import_liveness_check(job=job).status == Status.FAILED
    return failed


# --- error report ------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """Neutralise spreadsheet formula injection (OWASP): prefix risky leading characters with '."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def error_report_rows(*, job: ImportJob, batch: int = 5000):
    """Yield CSV text of the error report (header first), streaming from the database."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row", "column", "value", "reason"])
    yield buffer.getvalue()
    last = (0, 0)
    while True:
        # Keyset pagination on (row_number, id): index importrowerror_job_row_idx.
        rows = list(ImportRowError.objects.filter(job=job).filter(
            Q(row_number__gt=last[0]) | Q(row_number=last[0], id__gt=last[1])).order_by("row_number", "id")[:batch])
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for error in rows:
            writer.writerow([error.row_number, csv_safe(error.column), csv_safe(error.value or ""),
                             csv_safe(error.reason)])
        last = (rows[-1].row_number, rows[-1].id)
        yield buffer.getvalue()


def import_delete_file(*, job: ImportJob) -> None:
    """Remove the uploaded file of a finished job (it holds personal data)."""
    path = Path(job.file_path)
    if Path(settings.CDP_IMPORT_DIR).resolve() in path.resolve().parents:
        shutil.rmtree(path.parent, ignore_errors=True)


def sample_rows_for(*, job: ImportJob, rows: int = 3) -> dict[str, list[str]]:
    """A few raw values per column (shown beside each header on the mapping step)."""
    try:
        chunk = sample_rows(Path(job.file_path), file_info(job), rows=rows)
    except ImportFileError:
        return {}
    return {header: [v for v in chunk.frame[header].tolist() if v][:rows] for header in job.headers}


# --- personal data in retained uploads and row errors (erasure, retention) -----------------

def _file_lines(job: ImportJob):
    """The retained upload as lines of text (CSV/gz decoded with the job's encoding; XLSX rows
    joined by tabs), for searching, never for loading."""
    path = Path(job.file_path)
    if job.file_format == "xlsx":
        import openpyxl

        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            for values in workbook.worksheets[0].iter_rows(values_only=True):
                yield "\t".join("" if value is None else str(value) for value in values)
        finally:
            workbook.close()
        return
    opener = gzip.open if job.file_format == "csv.gz" else open
    with opener(path, "rt", encoding=job.encoding or "utf-8", errors="replace", newline="") as handle:
        yield from handle


def import_files_containing(*, matches: Callable[[str], bool]) -> list[int]:
    """Jobs whose retained upload has a line for which `matches(lower-cased line)` holds.

    A scan of the files still on disk; finished jobs' files are deleted after
    CDP_IMPORT_FILE_DAYS (`import_files_expire`), so there are few of them."""
    found = []
    for job in ImportJob.objects.exclude(file_path="").only("id", "file_path", "file_format", "encoding"):
        if not Path(job.file_path).exists():
            continue
        try:
            if any(matches(line.lower()) for line in _file_lines(job)):
                found.append(job.id)
        except (OSError, ValueError, zipfile.BadZipFile):
            logger.warning("import file unreadable while searching", extra={"job_id": job.id})
            found.append(job.id)  # cannot prove it holds nothing of the person: treat as a match
    return found


def import_files_remove(*, job_ids: list[int], reason: str) -> int:
    """Delete the uploads of these jobs (never of a running one); the history rows stay."""
    removed = 0
    for job in ImportJob.objects.filter(id__in=job_ids).exclude(status__in=ImportJob.ACTIVE_STATUSES):
        import_delete_file(job=job)
        ImportJob.objects.filter(pk=job.pk).update(file_path="", file_removed_reason=reason[:100])
        removed += 1
    return removed


def import_files_expire(*, older_than_days: int | None = None) -> int:
    """Delete uploads of jobs that finished more than CDP_IMPORT_FILE_DAYS ago (minimisation:
    the loaded data lives in the profiles; the file is only needed to retry)."""
    days = settings.CDP_IMPORT_FILE_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    ids = list(ImportJob.objects.filter(status__in=ImportJob.FINAL_STATUSES, finished_at__lt=cutoff)
               .exclude(file_path="").values_list("id", flat=True))
    return import_files_remove(job_ids=ids, reason="expired") if ids else 0


def import_row_errors_containing(*, matches: Callable[[str], bool]) -> list[int]:
    """Row errors whose offending value (encrypted at rest, decrypted here) matches."""
    return [row.id for row in ImportRowError.objects.only("id", "value").order_by("id").iterator(chunk_size=5000)
            if row.value and matches(row.value.lower())]
