"""manage.py runcdp: what `make run` runs (see cdp/launcher.py)."""

import sys

from django.core.management.base import BaseCommand

from cdp import launcher


class Command(BaseCommand):
    help = "Set up and start the whole CDP: database, migrations, admin, demo data, web, worker and beat."
    requires_system_checks = []

    def handle(self, *args, **options):
        sys.exit(launcher.run(sys.stdout))
