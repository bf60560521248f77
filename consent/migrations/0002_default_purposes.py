from django.db import migrations

PURPOSES = [
    ("analytics", "Analytics", "Measure how the website and apps are used, in aggregate.", "consent"),
    ("personalization", "Personalization", "Tailor content and offers to the person's interests.", "consent"),
    ("email_marketing", "Email marketing", "Send marketing emails and newsletters.", "consent"),
    ("advertising", "Advertising", "Use data to target and measure advertising.", "consent"),
    ("third_party_sharing", "Third-party sharing", "Share data with named partners.", "consent"),
]


def create_purposes(apps, schema_editor):
    Purpose = apps.get_model("consent", "Purpose")
    for key, name, description, basis in PURPOSES:
        Purpose.objects.get_or_create(key=key, defaults={"name": name, "description": description,
                                                         "legal_basis": basis})


def remove_purposes(apps, schema_editor):
    apps.get_model("consent", "Purpose").objects.filter(key__in=[p[0] for p in PURPOSES]).delete()


class Migration(migrations.Migration):
    dependencies = [("consent", "0001_initial")]
    operations = [migrations.RunPython(create_purposes, remove_purposes)]
