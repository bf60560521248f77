"""`segments_try_timestamptz(text)`: a text as timestamptz, or NULL instead of a cast error.

Trait and property values are JSON written by clients; a condition such as "traits.signup_at
within the last 30 days" must not fail a whole recompute because one profile holds "2026-13-45".
The compiler pre-filters with a regular expression and calls this only for date-shaped text.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION segments_try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("segments", "0002_segment_builder_membership_history")]

    operations = [migrations.RunSQL(CREATE, "DROP FUNCTION IF EXISTS segments_try_timestamptz(text)")]
