"""Reference rows: which purposes a GPC signal withdraws, and default CMP category mappings.

Kept in step with cdp/reference_data.py (tests that flush tables call reference_data_ensure).
"""

from django.db import migrations

GPC_PURPOSES = ("advertising", "third_party_sharing")

# (cmp, category, purpose key). Categories compare case-insensitively.
MAPPINGS = [
    # Segment Consent Management: context.consent.categoryPreferences; names are chosen by each
    # workspace, commonly plain words or OneTrust category ids.
    ("segment", "analytics", "analytics"),
    ("segment", "performance", "analytics"),
    ("segment", "personalization", "personalization"),
    ("segment", "functional", "personalization"),
    ("segment", "marketing", "email_marketing"),
    ("segment", "email", "email_marketing"),
    ("segment", "advertising", "advertising"),
    ("segment", "targeting", "advertising"),
    ("segment", "sharing", "third_party_sharing"),
    ("segment", "C0002", "analytics"),
    ("segment", "C0003", "personalization"),
    ("segment", "C0004", "advertising"),
    ("segment", "C0005", "third_party_sharing"),
    # IAB TCF v2 purposes (numbers) -> ours; a purpose mapped from several is granted only if all are.
    ("tcf", "2", "advertising"),
    ("tcf", "3", "advertising"),
    ("tcf", "4", "advertising"),
    ("tcf", "7", "advertising"),
    ("tcf", "5", "personalization"),
    ("tcf", "6", "personalization"),
    ("tcf", "8", "analytics"),
    ("tcf", "9", "analytics"),
    ("tcf", "10", "analytics"),
    # Values of an import's purpose column besides our own keys.
    ("import", "newsletter", "email_marketing"),
    ("import", "email", "email_marketing"),
    ("import", "marketing", "email_marketing"),
    ("import", "ads", "advertising"),
]


def forwards(apps, schema_editor):
    Purpose = apps.get_model("consent", "Purpose")
    Mapping = apps.get_model("consent", "CmpCategoryMapping")
    Purpose.objects.filter(key__in=GPC_PURPOSES).update(withdrawn_by_gpc=True)
    purposes = {p.key: p for p in Purpose.objects.all()}
    for cmp, category, key in MAPPINGS:
        if key in purposes:
            Mapping.objects.get_or_create(cmp=cmp, category=category, purpose=purposes[key])


def backwards(apps, schema_editor):
    apps.get_model("consent", "CmpCategoryMapping").objects.filter(
        cmp__in={m[0] for m in MAPPINGS}).delete()


class Migration(migrations.Migration):
    dependencies = [("consent", "0005_ledger_append_only_triggers")]
    operations = [migrations.RunPython(forwards, backwards)]
