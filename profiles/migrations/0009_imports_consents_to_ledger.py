# Consent columns of imports now go to the consent ledger; the PendingConsent model that kept them
# meanwhile is retired. Its rows are moved into the ledger by `manage.py import_consents_handover`
# (app code: the ledger's hash chain), which must run BEFORE this migration: the guard below refuses
# to drop the table while it holds a statement not handed over, so none can be lost.

from django.db import migrations, models

REFUSE_WHILE_PENDING = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM profiles_pendingconsent WHERE handed_over_at IS NULL) THEN
        RAISE EXCEPTION 'profiles_pendingconsent holds consent statements not yet in the consent ledger: '
                        'run "manage.py import_consents_handover", then migrate again';
    END IF;
END $$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('profiles', '0008_import_file_removed_reason'),
    ]

    operations = [
        migrations.RunSQL(REFUSE_WHILE_PENDING, reverse_sql=migrations.RunSQL.noop),
        migrations.RemoveConstraint(
            model_name='pendingconsent',
            name='pendingconsent_uniq',
        ),
        migrations.AddField(
            model_name='importjob',
            name='consents_recorded',
            field=models.BigIntegerField(default=0, help_text='consent records appended to the ledger'),
        ),
        migrations.DeleteModel(
            name='PendingConsent',
        ),
    ]
