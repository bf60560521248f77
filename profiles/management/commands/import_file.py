"""manage.py import_file PATH --kind KIND --source NAME [--mapping NAME|JSON] ...: import a file from
the command line with a progress bar (the same pipeline as the browser and the REST API)."""

import json
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from profiles.imports import fields as F
from profiles.imports import services
from profiles.imports.cleaning import DATE_FORMATS
from profiles.imports.formats import ImportFileError
from profiles.imports.mapping import MappingError
from profiles.imports.progress import PHASE_LABELS, READING, Snapshot, rate_and_eta
from profiles.models import ImportMapping, Source

BAR_WIDTH = 30


class ProgressBar:
    """`[#######.......]  45 %  450,000 / 1,000,000 rows  25,000 rows/s  ETA 22 s` on one line."""

    def __init__(self, stream, *, is_tty: bool):
        self.stream = getattr(stream, "_out", stream)  # the raw stream under Django's OutputWrapper
        self.is_tty = is_tty
        self.last_line = ""

    def __call__(self, snapshot: Snapshot) -> None:
        total = snapshot.rows_total or 0
        if snapshot.phase == READING:
            fraction = min(snapshot.rows_done / total, 1.0) if total else 0.0
            rate, eta = rate_and_eta(rows_done=snapshot.rows_done, rows_total=total, elapsed=snapshot.elapsed)
            text = (f"{snapshot.rows_done:,} / {total:,} rows" + (f"  {rate:,.0f} rows/s" if rate else "")
                    + (f"  ETA {eta:,.0f} s" if eta else ""))
            percent = int(80 * fraction)
        else:
            percent, text = 90, PHASE_LABELS.get(snapshot.phase, snapshot.phase)
        self.draw(percent, text)

    def draw(self, percent: int, text: str) -> None:
        filled = BAR_WIDTH * percent // 100
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {percent:3d} %  {text}"
        if self.is_tty:
            self.stream.write("\r" + line.ljust(len(self.last_line)))
        elif line != self.last_line:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last_line = line

    def finish(self, text: str) -> None:
        self.draw(100, text)
        if self.is_tty:
            self.stream.write("\n")


class Command(BaseCommand):
    help = "Import a CRM, transactions or enrichment file (CSV, .csv.gz or XLSX) with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--kind", required=True, choices=F.KINDS)
        parser.add_argument("--source", required=True, help="Name of the source the data comes from")
        parser.add_argument("--mapping", help='A saved mapping name, or JSON {"File header": "field", ...}; '
                                              "default: match the headers automatically")
        parser.add_argument("--map", action="append", default=[], metavar="HEADER=FIELD",
                            help="Map one column (repeatable; field '' ignores it; trait:name for custom traits)")
        parser.add_argument("--date-format", choices=sorted(DATE_FORMATS))
        parser.add_argument("--decimal-comma", action="store_true", help="Amounts are written 1.234,50")
        parser.add_argument("--default-currency")
        parser.add_argument("--default-channel")
        parser.add_argument("--encoding", help="Override the detected encoding (utf-8, utf-8-sig, cp1252, latin-1)")
        parser.add_argument("--save-mapping", metavar="NAME", help="Save the mapping used under this name")
        parser.add_argument("--user", help="Username recorded as the importer (default: none)")
        parser.add_argument("--errors-out", metavar="FILE", help="Write the error report (CSV) here")
        parser.add_argument("--queue", action="store_true", help="Hand the import to a worker instead of running here")

    def handle(self, *args, **options):
        path = Path(options["path"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        source = Source.objects.filter(name=options["source"]).first()
        if source is None:
            names = ", ".join(Source.objects.values_list("name", flat=True)) or "none yet (create one in admin)"
            raise CommandError(f"No source named {options['source']!r}. Sources: {names}")
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user named {options['user']!r}")
        saved = None
        columns_override = {}
        if options["mapping"]:
            text = options["mapping"].strip()
            if text.startswith("{"):
                try:
                    columns_override = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise CommandError(f"--mapping is not valid JSON: {exc}") from None
            else:
                saved = ImportMapping.objects.filter(name=text, kind=options["kind"]).first()
                if saved is None:
                    raise CommandError(f"No saved {options['kind']} mapping named {text!r}")
        for item in options["map"]:
            header, sep, target = item.partition("=")
            if not sep:
                raise CommandError(f"--map takes HEADER=FIELD, got {item!r}")
            columns_override[header] = target
        try:
            job = services.import_upload(user=user, source=source, kind=options["kind"], file_name=path.name,
                                         path=path, mapping=saved)
            columns = {**job.columns, **columns_override}
            opts = dict(job.options)
            for key in ("date_format", "default_currency", "default_channel", "encoding"):
                if options[key]:
                    opts[key] = options[key]
            if options["decimal_comma"]:
                opts["decimal_comma"] = True
            services.import_configure(job=job, user=user, columns=columns, options=opts,
                                      save_as=options["save_mapping"] or "")
            job = services.import_start(job=job, user=user, enqueue=options["queue"])
        except ImportFileError as exc:
            raise CommandError(exc.message) from None
        except MappingError as exc:
            raise CommandError("The mapping needs fixing:\n  - " + "\n  - ".join(exc.problems)) from None
        self.stdout.write(f"Import {job.id}: {path.name} ({job.file_format}, {job.encoding or 'xlsx'}, "
                          f"about {job.rows_total:,} rows) into {source.name}")
        if options["queue"]:
            self.stdout.write("Queued for a worker; follow it on the Imports page.")
            return
        bar = ProgressBar(self.stderr, is_tty=sys.stderr.isatty())
        job = services.import_execute(job_id=job.id, on_progress=bar)
        if job.status != "succeeded":
            bar.finish(job.get_status_display())
            raise CommandError(job.error_message)
        bar.finish(f"{job.rows_done:,} rows")
        self.stdout.write(
            f"Loaded {job.rows_loaded:,} rows; rejected {job.rows_rejected:,}; duplicates skipped "
            f"{job.rows_duplicate:,}; matched {job.profiles_matched:,} existing profiles; created "
            f"{job.profiles_created:,}" + (f"; new orders {job.transactions_created:,}" if job.kind == "transactions"
                                           else "") + ".")
        if options["errors_out"] and job.rows_rejected + job.rows_duplicate:
            with open(options["errors_out"], "w", newline="") as handle:
                for block in services.error_report_rows(job=job):
                    handle.write(block)
            self.stdout.write(f"Error report: {options['errors_out']}")
        elif job.rows_rejected:
            self.stdout.write("Rows were rejected: use --errors-out FILE, or download the report on the Imports page.")
