"""The events table, range-partitioned by month on `timestamp` (hand-written: Django cannot
express declarative partitioning).

- The primary key is (id, timestamp) because PostgreSQL requires the partition key in every
  unique index; Django's state keeps `id` as the key (ids come from one sequence, so unique).
- `id` uses a plain sequence: identity columns on partitioned tables need PostgreSQL 17.
- Indexes: (profile_id, name, timestamp) serves per-profile behavioural conditions and the
  timeline; (name, timestamp) serves "who did X in the window"; BRIN on timestamp serves
  dashboard ranges cheaply on an append-mostly table.
- A DEFAULT partition catches events outside the created months (see profiles/partitions.py).
"""

import django.db.models.deletion
from django.db import migrations, models

CREATE = """
CREATE SEQUENCE profiles_event_id_seq AS bigint;
CREATE TABLE profiles_event (
    id bigint NOT NULL DEFAULT nextval('profiles_event_id_seq'),
    timestamp timestamptz NOT NULL,
    original_timestamp text NULL,
    sent_at timestamptz NULL,
    received_at timestamptz NOT NULL,
    source_id bigint NULL,
    profile_id uuid NULL,
    message_id varchar(100) NOT NULL,
    type varchar(10) NOT NULL,
    name varchar(200) NOT NULL DEFAULT '',
    category varchar(200) NOT NULL DEFAULT '',
    anonymous_id varchar(200) NOT NULL DEFAULT '',
    user_id varchar(200) NOT NULL DEFAULT '',
    group_id varchar(200) NOT NULL DEFAULT '',
    previous_id varchar(200) NOT NULL DEFAULT '',
    properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    traits jsonb NOT NULL DEFAULT '{}'::jsonb,
    context jsonb NOT NULL DEFAULT '{}'::jsonb,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (id, timestamp)
) PARTITION BY RANGE (timestamp);
ALTER SEQUENCE profiles_event_id_seq OWNED BY profiles_event.id;
CREATE TABLE profiles_event_default PARTITION OF profiles_event DEFAULT;
CREATE INDEX profiles_event_profile_name_ts ON profiles_event (profile_id, name, timestamp);
CREATE INDEX profiles_event_name_ts ON profiles_event (name, timestamp);
CREATE INDEX profiles_event_ts_brin ON profiles_event USING brin (timestamp);
"""

DROP = "DROP TABLE profiles_event; "


class Migration(migrations.Migration):
    dependencies = [("profiles", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(CREATE, DROP)],
            state_operations=[
                migrations.CreateModel(
                    name='Event',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('timestamp', models.DateTimeField(help_text='Event time corrected for client clock skew')),
                        ('original_timestamp', models.TextField(blank=True, help_text="Client's timestamp, verbatim", null=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('received_at', models.DateTimeField()),
                        ('message_id', models.CharField(max_length=100)),
                        ('type', models.CharField(choices=[('track', 'Track'), ('page', 'Page'), ('screen', 'Screen'), ('identify', 'Identify'), ('group', 'Group'), ('alias', 'Alias')], max_length=10)),
                        ('name', models.CharField(blank=True, default='', help_text='track: event; page/screen: name', max_length=200)),
                        ('category', models.CharField(blank=True, default='', max_length=200)),
                        ('anonymous_id', models.CharField(blank=True, default='', max_length=200)),
                        ('user_id', models.CharField(blank=True, default='', max_length=200)),
                        ('group_id', models.CharField(blank=True, default='', max_length=200)),
                        ('previous_id', models.CharField(blank=True, default='', max_length=200)),
                        ('properties', models.JSONField(blank=True, default=dict)),
                        ('traits', models.JSONField(blank=True, default=dict)),
                        ('context', models.JSONField(blank=True, default=dict)),
                        ('extra', models.JSONField(blank=True, default=dict, help_text='integrations and any other keys, kept as sent')),
                        ('profile', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='events', to='profiles.profile')),
                        ('source', models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='profiles.source')),
                    ],
                ),
            ],
        ),
    ]
