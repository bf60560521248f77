"""Rows the product needs in every database: roles, consent purposes, blocked identifier values.

Data migrations create them on a new database; `reference_data_ensure` (idempotent) puts them
back where a database was emptied without migrating (tests that flush, `manage.py flush`).
Keep both in step when adding reference data.
"""

from django.contrib.auth.models import Group
from django.db import transaction

from cdp.roles import ROLES

PURPOSES = [
    ("analytics", "Analytics", "Measure how the website and apps are used, in aggregate.", "consent"),
    ("personalization", "Personalization", "Tailor content and offers to the person's interests.", "consent"),
    ("email_marketing", "Email marketing", "Send marketing emails and newsletters.", "consent"),
    ("advertising", "Advertising", "Use data to target and measure advertising.", "consent"),
    ("third_party_sharing", "Third-party sharing", "Share data with named partners.", "consent"),
]


@transaction.atomic
def reference_data_ensure() -> None:
    """Create missing roles and purposes; never changes existing rows."""
    from consent.models import Purpose

    for name in ROLES:
        Group.objects.get_or_create(name=name)
    for key, name, description, basis in PURPOSES:
        Purpose.objects.get_or_create(key=key, defaults={"name": name, "description": description,
                                                         "legal_basis": basis})
    from profiles.identity.blocklist import blocked_identifiers_ensure_defaults

    blocked_identifiers_ensure_defaults()
