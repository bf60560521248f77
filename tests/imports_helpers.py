"""Helpers for the import tests: build files, run an import in-process (same code the worker runs)."""

import io

import pytest

from profiles.imports import services
from profiles.models import ImportJob


def upload(*, user, source, kind: str, content: bytes, name: str = "file.csv", columns: dict | None = None,
           options: dict | None = None) -> ImportJob:
    job = services.import_upload(user=user, source=source, kind=kind, file_name=name,
                                 chunks=iter([content]))
    if columns is not None or options is not None:
        merged_columns = dict(job.columns)
        merged_columns.update(columns or {})
        merged_options = dict(job.options)
        merged_options.update(options or {})
        job = services.import_configure(job=job, user=user, columns=merged_columns, options=merged_options)
    return job


def run_import(*, user, source, kind: str, content: bytes, name: str = "file.csv", columns: dict | None = None,
               options: dict | None = None) -> ImportJob:
    job = upload(user=user, source=source, kind=kind, content=content, name=name, columns=columns, options=options)
    services.import_start(job=job, user=user)
    return services.import_execute(job_id=job.id)


def error_report(job: ImportJob) -> list[list[str]]:
    import csv

    text = "".join(services.error_report_rows(job=job))
    return list(csv.reader(io.StringIO(text)))[1:]


@pytest.fixture(autouse=True)
def _import_dir(settings, tmp_path):
    """Uploads of a test go to its own temporary folder (workers read the path from the job)."""
    settings.CDP_IMPORT_DIR = tmp_path / "imports"
