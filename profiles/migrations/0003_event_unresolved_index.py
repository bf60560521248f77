"""Index the (few) events not yet attached to a profile: identity resolution claims them
through it, and it stays tiny because resolution empties it within seconds."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("profiles", "0002_event_partitioned")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX profiles_event_unresolved ON profiles_event (received_at, id) WHERE profile_id IS NULL",
            "DROP INDEX profiles_event_unresolved",
        ),
    ]
