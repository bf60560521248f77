from pathlib import Path

from django.core.management.base import BaseCommand

from consent.services.ledger import ledger_head_export


class Command(BaseCommand):
    help = "Write today's signed head hash of the consent ledger (beat does this daily)."

    def add_arguments(self, parser):
        parser.add_argument("--head-dir", type=Path, default=None)

    def handle(self, *args, head_dir, **options):
        self.stdout.write(f"Head written to {ledger_head_export(head_dir=head_dir)}")
