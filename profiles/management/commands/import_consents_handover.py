"""manage.py import_consents_handover: move consent statements that imports kept as pending (before
the consent ledger existed) into the ledger. Run it before `migrate` applies
profiles 0009_imports_consents_to_ledger, which drops their table and refuses while one is left."""

from django.core.management.base import BaseCommand

from profiles.imports.consents import pending_consents_handover


class Command(BaseCommand):
    help = "Hand pending consent statements of earlier imports to the consent ledger (run before migrating)."

    def handle(self, *args, **options):
        counts = pending_consents_handover()
        self.stdout.write(f"Pending consent statements: {counts['recorded']:,} recorded in the ledger, "
                          f"{counts['unchanged']:,} already known, {counts['refused']:,} refused by the ledger "
                          "(their ids and reasons are in the log). Nothing is left pending.")
