"""Replay rejected events once their cause is fixed (a corrected payload, a new key, an origin
added to the source, ...). Each one that now goes through is stored and marked replayed;
the others stay pending with the reason they still fail.

    manage.py replay_rejected --reason origin_not_allowed --source 3
    manage.py replay_rejected --id 17 --id 18
    manage.py replay_rejected --reason invalid_write_key --assign-source 3   # events sent with a bad key
    manage.py replay_rejected --dry-run                                        # try, store nothing
"""

import contextlib

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from profiles.ingestion.services import rejected_replay
from profiles.models import RejectedEvent, Source


class _DryRun(Exception):
    pass


class Command(BaseCommand):
    help = "Replay pending rejected events (after their payload or their cause was fixed)."

    def add_arguments(self, parser):
        parser.add_argument("--id", type=int, action="append", dest="ids", help="a rejected event id (repeatable)")
        parser.add_argument("--reason", help="only this reason code, e.g. missing_event")
        parser.add_argument("--source", type=int, help="only rejections of this source id")
        parser.add_argument("--assign-source", type=int,
                            help="source id for rejections that have none (unknown or missing write key)")
        parser.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
        parser.add_argument("--dry-run", action="store_true", help="try every replay, then roll all of it back")

    def handle(self, *args, ids=None, reason=None, source=None, assign_source=None, limit=1000, dry_run=False,
               **options):
        if assign_source and not Source.objects.filter(pk=assign_source).exists():
            raise CommandError(f"No source with id {assign_source}.")
        pending = RejectedEvent.objects.filter(replayed_at__isnull=True).order_by("received_at", "id")
        if ids:
            pending = pending.filter(pk__in=ids)
        if reason:
            pending = pending.filter(reason=reason)
        if source:
            pending = pending.filter(source_id=source)
        candidates = list(pending.values_list("pk", "reason", "source_id")[:limit])
        if not candidates:
            self.stdout.write("Nothing to replay.")
            return
        replayed = failed = stored = 0
        try:
            # A dry run is one transaction rolled back at the end; a real run commits each replay.
            with transaction.atomic() if dry_run else contextlib.nullcontext():
                for pk, code, source_id in candidates:
                    outcome = rejected_replay(rejected_id=pk, source_id=None if source_id else assign_source)
                    replayed, failed = replayed + outcome.replayed, failed + (not outcome.replayed)
                    stored += outcome.stored
                    mark = "replayed" if outcome.replayed else "still rejected"
                    self.stdout.write(f"#{pk} {code}: {mark}. {outcome.note}")
                if dry_run:
                    raise _DryRun
        except _DryRun:
            self.stdout.write("Dry run: nothing was stored or marked.")
        self.stdout.write(f"{replayed} replayed ({stored} events stored), {failed} still rejected.")
