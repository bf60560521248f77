"""manage.py import_file: a large file imported from the command line with a progress bar."""

import io

import pytest
from django.core.management import CommandError, call_command

from profiles.models import ImportJob, Source, Transaction
from tests.imports_helpers import _import_dir  # noqa: F401 - autouse fixture

ROWS = 60_000


@pytest.fixture
def stores(transactional_db):
    return Source.objects.create(name="Stores", kind=Source.Kind.POS)


def test_cli_imports_a_large_file_with_a_progress_bar(stores, tmp_path, settings):
    settings.CDP_IMPORT_CHUNK_ROWS = 2_000
    path = tmp_path / "pos-export.csv"
    with open(path, "w") as handle:
        handle.write("Receipt;Kunde;Datum;Betrag\n")
        for n in range(ROWS):
            handle.write(f"R{n};K{n % 5000};{1 + n % 28:02d}.{1 + n % 12:02d}.2024;{n % 500},{n % 100:02d}\n")
        handle.write("R-bad;;01.01.2024;1,00\n")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_file", str(path), "--kind", "transactions", "--source", "Stores", "--map", "Receipt=order_id",
                 "--date-format", "eu", "--decimal-comma", "--default-currency", "EUR",
                 "--errors-out", str(tmp_path / "errors.csv"), stdout=out, stderr=err)
    bar = err.getvalue().splitlines()
    assert bar[0].startswith("[" + "." * 30 + "]   0 %  0 / 60,001 rows")
    assert f"[{'#' * 24}{'.' * 6}]  80 %  60,001 / 60,001 rows" in "\n".join(bar)
    assert bar[-1] == f"[{'#' * 30}] 100 %  60,001 rows"
    job = ImportJob.objects.get()
    assert (job.status, job.rows_loaded, job.rows_rejected, job.profiles_created) == ("succeeded", ROWS, 1, 5000)
    assert Transaction.objects.count() == ROWS
    assert "Loaded 60,000 rows; rejected 1;" in out.getvalue()
    assert (tmp_path / "errors.csv").read_text().splitlines()[1].startswith('60002,,,"missing identifier')


def test_cli_explains_what_is_wrong(stores, tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(CommandError, match="No source named 'Nope'. Sources: Stores"):
        call_command("import_file", str(path), "--kind", "crm", "--source", "Nope")
    with pytest.raises(CommandError, match="Map at least one customer identifier column"):
        call_command("import_file", str(path), "--kind", "crm", "--source", "Stores")
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_file", str(tmp_path / "missing.csv"), "--kind", "crm", "--source", "Stores")
    assert Transaction.objects.count() == 0
