"""manage.py generate_demo --profiles N --days D --seed S: load a deterministic demo shop."""

import sys
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from profiles.demo.generator import DemoOptions, demo_generate
from profiles.models import Profile
from profiles.services import profiles_wipe


class Command(BaseCommand):
    help = "Generate deterministic demo data (profiles, identities, events, transactions) with COPY."

    def add_arguments(self, parser):
        parser.add_argument("--profiles", type=int, default=20000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--events-per-profile", type=float, default=20.0)
        parser.add_argument("--end", help="Exclusive end of the time window, ISO date-time in UTC "
                                          "(default: now, to the hour). Same seed and end give the same data.")
        parser.add_argument("--wipe", action="store_true",
                            help="Delete ALL profiles, identities, events and transactions first.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when profiles already exist.")

    def handle(self, *args, **options):
        if options["profiles"] < 1 or options["days"] < 1:
            raise CommandError("--profiles and --days must be at least 1")
        end = None
        if options["end"]:
            try:
                end = datetime.fromisoformat(options["end"])
            except ValueError:
                raise CommandError(f"--end must be an ISO date-time, got {options['end']!r}") from None
            end = end.replace(tzinfo=end.tzinfo or UTC)
        existing = Profile.objects.count()
        if existing and options["if_empty"]:
            self.stdout.write(f"Database already holds {existing:,} profiles; no demo data loaded.")
            return
        if existing and not options["wipe"]:
            raise CommandError(f"The database already holds {existing:,} profiles. Use --wipe to delete all "
                               "profile data first, or --if-empty to skip.")
        if options["wipe"]:
            profiles_wipe()
        demo = DemoOptions(profiles=options["profiles"], days=options["days"], seed=options["seed"], end=end,
                           events_per_profile=options["events_per_profile"])
        result = demo_generate(options=demo, progress=self._progress(options["profiles"]))
        sys.stderr.write("\n")
        counts = result.counts
        self.stdout.write(self.style.SUCCESS(
            f"Demo data loaded in {result.seconds:.1f} s: {counts['profiles']:,} profiles, "
            f"{counts['identities']:,} identities, {counts['links']:,} links, {counts['events']:,} events, "
            f"{counts['transactions']:,} transactions ({counts['items']:,} items), "
            f"{result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC."))

    def _progress(self, total):
        interactive = sys.stderr.isatty()

        def report(done, events):
            if interactive or done == total:
                width = 30
                filled = int(width * done / total)
                sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} profiles, "
                                 f"{events:,} events")
                sys.stderr.flush()
        return report
