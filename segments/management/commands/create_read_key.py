"""Create a read key for a source (segment lookups); the key is printed once and stored hashed."""

from django.core.management.base import BaseCommand, CommandError

from cdp import apikeys
from profiles.models import Source, SourceKey


class Command(BaseCommand):
    help = "Create a read key for a source, for GET /v1/segments (shown once; only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("--source", required=True, help="name of the source, e.g. 'Demo web shop'")

    def handle(self, *args, source: str, **options):
        found = Source.objects.filter(name=source, is_active=True).first()
        if found is None:
            names = ", ".join(Source.objects.filter(is_active=True).values_list("name", flat=True)) or "none"
            raise CommandError(f"No active source named {source!r}. Sources: {names}")
        key, raw = apikeys.source_key_create(source=found, kind=SourceKey.Kind.READ)
        self.stdout.write(f"Read key for {found.name} (prefix {key.prefix}; shown once, keep it):\n{raw}")
