"""Rows the product needs in every database: roles, consent purposes, CMP category mappings,
blocked identifier values.

Data migrations create them on a new database; `reference_data_ensure` (idempotent) puts them
back where a database was emptied without migrating (tests that flush, `manage.py flush`).
Keep both in step when adding reference data (consent/migrations/0002 and 0006).
"""

from django.contrib.auth.models import Group
from django.db import transaction

from cdp.roles import ROLES

# (key, name, description, legal basis, withdrawn by a Global Privacy Control signal)
PURPOSES = [
    ("analytics", "Analytics", "Measure how the website and apps are used, in aggregate.", "consent", False),
    ("personalization", "Personalization", "Tailor content and offers to the person's interests.", "consent",
     False),
    ("email_marketing", "Email marketing", "Send marketing emails and newsletters.", "consent", False),
    ("advertising", "Advertising", "Use data to target and measure advertising.", "consent", True),
    ("third_party_sharing", "Third-party sharing", "Share data with named partners.", "consent", True),
]

# (cmp, category, purpose key): see consent/migrations/0006_default_mappings_and_gpc.py.
CMP_MAPPINGS = [
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
    ("tcf", "2", "advertising"),
    ("tcf", "3", "advertising"),
    ("tcf", "4", "advertising"),
    ("tcf", "7", "advertising"),
    ("tcf", "5", "personalization"),
    ("tcf", "6", "personalization"),
    ("tcf", "8", "analytics"),
    ("tcf", "9", "analytics"),
    ("tcf", "10", "analytics"),
    ("import", "newsletter", "email_marketing"),
    ("import", "email", "email_marketing"),
    ("import", "marketing", "email_marketing"),
    ("import", "ads", "advertising"),
]


@transaction.atomic
def reference_data_ensure() -> None:
    """Create missing roles, purposes and default CMP mappings; never changes existing rows."""
    from consent.models import CmpCategoryMapping, Purpose

    for name in ROLES:
        Group.objects.get_or_create(name=name)
    purposes = {}
    for key, name, description, basis, gpc in PURPOSES:
        purposes[key], _ = Purpose.objects.get_or_create(
            key=key, defaults={"name": name, "description": description, "legal_basis": basis,
                               "withdrawn_by_gpc": gpc})
    if not CmpCategoryMapping.objects.exists():
        CmpCategoryMapping.objects.bulk_create([CmpCategoryMapping(cmp=cmp, category=category, purpose=purposes[key])
                                                for cmp, category, key in CMP_MAPPINGS])
    from profiles.identity.blocklist import blocked_identifiers_ensure_defaults

    blocked_identifiers_ensure_defaults()
