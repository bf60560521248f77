"""Business operations of the profiles app that write across models."""

import logging

from django.db import connection, transaction

from cdp.pii import registry

logger = logging.getLogger(__name__)

# Everything that hangs off profiles. CASCADE also empties other apps' tables that point at
# profiles (segment memberships, exposures, ...): a wipe means "no people left at all".
PROFILE_DATA_TABLES = [
    "profiles_transactionitem", "profiles_transaction", "profiles_event", "profiles_identityflag",
    "profiles_identitylink", "profiles_identity", "profiles_profilemerge", "profiles_profiletraitsource",
    "profiles_computedtraits", "profiles_rejectedevent", "profiles_profile",
    # Without its events, a remembered message id would turn a re-sent message into a "duplicate".
    "profiles_eventdedupe",
]


@transaction.atomic
def profiles_wipe() -> None:
    """Delete every profile and all data about people (demo reloads; never called by the product UI).

    Other apps' tables that point at profiles go too: by CASCADE where they have a foreign key,
    by name where they declare `WIPED_WITH_PROFILES` in their pii.py. The consent ledger stays
    (append-only evidence; its subjects are keyed hashes)."""
    tables = PROFILE_DATA_TABLES + registry().wiped_with_profiles
    with connection.cursor() as cursor:
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED; rows written earlier in this
        # transaction leave pending checks that TRUNCATE refuses to run over. Fire them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    logger.warning("all profile data wiped", extra={"tables": len(tables)})
