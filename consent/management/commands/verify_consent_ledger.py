from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from consent.services.audit import audit_record
from consent.services.ledger import ledger_verify


class Command(BaseCommand):
    help = ("Walk the consent ledger's hash chain and report the first broken record; then check the "
            "exported daily head files (a removed tail shows up there). Exit status 1 when broken.")

    def add_arguments(self, parser):
        parser.add_argument("--head-dir", type=Path, default=None,
                            help="folder of the head files (default CDP_CONSENT_HEAD_DIR)")
        parser.add_argument("--batch-size", type=int, default=5000)

    def handle(self, *args, head_dir, batch_size, **options):
        result = ledger_verify(head_dir=head_dir, batch_size=batch_size)
        audit_record(action="consent.ledger_verified", object_type="ledger", object_id=result.last_sequence,
                     details={"intact": result.is_intact, "records": result.records_checked,
                              "first_broken": result.first_broken.sequence if result.first_broken else None,
                              "via": "command"})
        if not result.is_intact:
            raise CommandError(result.summary())
        self.stdout.write(self.style.SUCCESS(result.summary()))
