"""Recompute every identity component from the active links and repair what disagrees."""

from django.core.management.base import BaseCommand

from profiles.identity.rebuild import identity_graph_rebuild


class Command(BaseCommand):
    help = "Recompute identity components with SciPy (COPY out, connected_components, repair set-based)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")

    def handle(self, *args, dry_run=False, **options):
        run = identity_graph_rebuild(dry_run=dry_run)
        verb = "would absorb" if dry_run else "absorbed"
        self.stdout.write(
            f"{run.identities:,} identities, {run.links:,} active links, {run.components:,} components; "
            f"{verb} {run.profiles_absorbed:,} profiles, split off {run.profiles_created:,}, "
            f"moved {run.identities_moved:,} identities and {run.events_moved:,} events in {run.seconds:.2f} s"
            + (" (dry run: nothing changed)" if dry_run else ""))
