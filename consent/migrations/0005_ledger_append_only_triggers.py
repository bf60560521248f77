"""The consent ledger and the notices it points at are append-only in the database too.

A trigger refuses UPDATE and DELETE (per row) and TRUNCATE (per statement) on
consent_consentrecord and consent_noticeversion, so neither a bug in the app nor a stray
`manage.py flush` can rewrite evidence. The hash chain (consent.services.ledger) detects what
a superuser does with the triggers disabled.

TRUNCATE is allowed only when the session setting `cdp.allow_ledger_truncate` is `on`: the test
suite sets it on its throw-away database (tests/conftest.py) so Django can flush tables between
tests. A production database never sets it.
"""

from django.db import migrations

FUNCTION = """
CREATE FUNCTION consent_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('cdp.allow_ledger_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% on % refused: the consent ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'Withdrawal is a new record (consent.services.ledger).';
END
$$;
"""

TABLES = ("consent_consentrecord", "consent_noticeversion")


def _triggers() -> str:
    statements = [FUNCTION]
    for table in TABLES:
        statements.append(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                          f"FOR EACH ROW EXECUTE FUNCTION consent_refuse_change();")
        statements.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION consent_refuse_change();")
    return "\n".join(statements)


def _drop() -> str:
    statements = []
    for table in TABLES:
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table};")
        statements.append(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};")
    statements.append("DROP FUNCTION IF EXISTS consent_refuse_change();")
    return "\n".join(statements)


class Migration(migrations.Migration):
    dependencies = [("consent", "0004_ledger_state_requests")]
    operations = [migrations.RunSQL(_triggers(), _drop())]
