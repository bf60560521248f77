from django.core.management.base import BaseCommand, CommandError

from cdp.keyrotation import encryption_key_rotate


class Command(BaseCommand):
    help = ("Re-encrypt every encrypted column (and access-request files) under the first key of "
            "CDP_ENCRYPTION_KEYS. Put the new key first, keep the old ones after it, run this, then "
            "remove the old keys.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")

    def handle(self, *args, batch_size, dry_run, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")

        def progress(column):
            self.stdout.write(f"  {column.label}: {column.reencrypted:,} re-encrypted"
                              + (f", {column.failed:,} could not be decrypted" if column.failed else ""))

        self.stdout.write(f"Re-encrypting under key {'(dry run) ' if dry_run else ''}…")
        result = encryption_key_rotate(batch_size=batch_size, dry_run=dry_run, progress=progress)
        if result.failed:
            raise CommandError(f"{result.failed:,} values could not be decrypted with any configured key; "
                               "keep the old keys until they are resolved")
        self.stdout.write(self.style.SUCCESS(
            f"Done: everything is encrypted with key {result.key_id}. Older keys may now be removed from "
            "CDP_ENCRYPTION_KEYS."))
