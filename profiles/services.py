"""Business operations of the profiles app that write across models."""

import logging

from django.db import connection, transaction

logger = logging.getLogger(__name__)

# Everything that hangs off profiles. CASCADE also empties other apps' tables that point at
# profiles (segment memberships, exposures, ...): a wipe means "no people left at all".
PROFILE_DATA_TABLES = [
    "profiles_transactionitem", "profiles_transaction", "profiles_event", "profiles_identityflag",
    "profiles_identitylink", "profiles_identity", "profiles_profilemerge", "profiles_profiletraitsource",
    "profiles_computedtraits", "profiles_rejectedevent", "profiles_profile",
]


@transaction.atomic
def profiles_wipe() -> None:
    """Delete every profile and all data about people (demo reloads; never called by the product UI)."""
    with connection.cursor() as cursor:
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED; rows written earlier in this
        # transaction leave pending checks that TRUNCATE refuses to run over. Fire them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {', '.join(PROFILE_DATA_TABLES)} RESTART IDENTITY CASCADE")
    logger.warning("all profile data wiped", extra={"tables": len(PROFILE_DATA_TABLES)})
