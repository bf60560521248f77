"""Default blocked identifier values (placeholders tracking code sends instead of a real id).

A copy of profiles/identity/blocklist.py DEFAULTS (migrations never import app code);
`cdp.reference_data.reference_data_ensure` restores them where tables were emptied.
"""

from django.db import migrations

ANY_EXACT = ("", "null", "undefined", "none", "nil", "nan", "0", "-1", "anonymous", "anon", "unknown", "guest",
             "test", "n/a", "na", "[object object]", "true", "false", "00000000-0000-0000-0000-000000000000")
EMAIL_EXACT = ("test@test.com", "test@example.com", "example@example.com", "email@example.com", "user@example.com",
               "noemail@noemail.com", "no@email.com", "none@none.com", "abc@abc.com", "a@a.com")
DEFAULTS = [
    *[("", "exact", value, "placeholder sent by tracking code", True) for value in ANY_EXACT],
    *[("email", "exact", value, "test or placeholder address", True) for value in EMAIL_EXACT],
    # Off by default: the demo data's addresses use these reserved domains. Turn it on in production.
    ("email", "regex", r"@(example\.(com|org|net)|[^@]*\.(test|invalid|example|localhost))$",
     "reserved example domains (RFC 2606); off by default, the demo data uses them", False),
    ("", "regex", r"^0+$", "all zeros", True),
    ("", "regex", r"^(.)\1{5,}$", "one character repeated (aaaaaa, 1111111)", True),
    ("phone", "regex", r"^\+\d{1,3}0{6,}$", "national number all zeros", True),
]


def create_defaults(apps, schema_editor):
    BlockedIdentifier = apps.get_model("profiles", "BlockedIdentifier")
    for kind, match, value, note, active in DEFAULTS:
        BlockedIdentifier.objects.get_or_create(kind=kind, match=match, value=value,
                                                defaults={"note": note, "is_default": True, "is_active": active})


def remove_defaults(apps, schema_editor):
    apps.get_model("profiles", "BlockedIdentifier").objects.filter(is_default=True).delete()


class Migration(migrations.Migration):
    dependencies = [("profiles", "0006_identity_resolution")]

    operations = [migrations.RunPython(create_defaults, remove_defaults)]
