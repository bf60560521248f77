"""Attach every unresolved event to its profile now (what the Celery task does, in the foreground)."""

import time

from django.core.management.base import BaseCommand

from profiles.identity.resolve import identity_resolve_batch


class Command(BaseCommand):
    help = "Resolve all pending events in batches, printing progress."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, batch_size=None, **options):
        began, total, batches = time.perf_counter(), 0, 0
        while True:
            result = identity_resolve_batch(limit=batch_size)
            batches += 1
            total += result.events
            if result.events:
                self.stdout.write(f"batch {batches}: {result.events:,} events, {result.profiles_created:,} new "
                                  f"profiles, {result.merges:,} merges, {result.flags:,} flagged")
            if result.events == 0 or (batch_size and result.events < batch_size):
                break
        self.stdout.write(f"resolved {total:,} events in {time.perf_counter() - began:.1f} s")
