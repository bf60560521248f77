"""Where the profiles app keeps personal data (see cdp/pii.py)."""

from cdp.pii import EncryptedColumn, NoPii, PiiLocation

LOCATIONS = [
    PiiLocation("profiles.Profile", "id", ("first_name", "last_name", "birth_year", "age", "gender", "city",
                                           "postcode", "traits"), note="names encrypted at rest"),
    PiiLocation("profiles.ComputedTraits", "profile_id"),
    PiiLocation("profiles.Identity", "profile_id", ("value", "value_hash"),
                note="emails and phones encrypted; matching on keyed hash"),
    PiiLocation("profiles.IdentityLink", "identity_a__profile_id", on_erasure="cascade"),
    PiiLocation("profiles.Event", "profile_id", ("anonymous_id", "user_id", "properties", "traits", "context")),
    PiiLocation("profiles.Transaction", "profile_id", ("order_id", "store")),
    PiiLocation("profiles.TransactionItem", "transaction__profile_id", on_erasure="cascade"),
    PiiLocation("profiles.ProfileMerge", "profile_id", ("state_before", "reason"),
                note="merge/un-merge log; state_before is the survivor's traits, encrypted. Also names other_profile_id"),
    PiiLocation("profiles.ProfileTraitSource", "profile_id", note="where each trait value came from (no values)"),
    PiiLocation("profiles.IdentityFlag", "identity__profile_id", ("resolution_note",), on_erasure="cascade",
                note="guard-rail cases; ids only, deleted with the identity"),
    PiiLocation("profiles.RejectedEvent", "", ("payload", "raw_body"),
                note="payloads encrypted at rest; not linked to a profile: erasure must decrypt and search "
                     "payloads by the person's identifiers (or purge rejections older than the retention)"),
    # --- imports
    PiiLocation("profiles.ImportJob", "", ("file_path",), on_erasure="keep_hashed",
                note="the uploaded file on disk holds personal data: deleted CDP_IMPORT_FILE_DAYS after the import "
                     "finished, and at once by an erasure whose person it mentions (the history row stays)"),
    PiiLocation("profiles.ImportRowError", "", ("value",),
                note="offending values of rejected rows, encrypted; not linked to a profile"),
    PiiLocation("profiles.PendingMerge", "profile_a_id", note="also profile_b_id"),
    PiiLocation("profiles.EmailDigest", "identity__profile_id", ("digest_hash",), on_erasure="cascade"),
    PiiLocation("profiles.TraitProvenance", "profile_id", on_erasure="cascade"),
]
NO_PII = [
    NoPii("profiles.Source", "configuration"),
    NoPii("profiles.SourceKey", "hashed API keys"),
    NoPii("profiles.Product", "catalogue"),
    NoPii("profiles.EventDedupe", "source id, the client's random message id and a time"),
    NoPii("profiles.DroppedEventCount", "counts of events not kept for lack of consent, per source, hour and reason"),
    NoPii("profiles.ImportMapping", "configuration: header names and label maps"),
    NoPii("profiles.BlockedIdentifier", "placeholder values that identify nobody (undefined, test@test.com, ...)"),
    NoPii("profiles.IdentityRebuild", "run log with counts"),
]
# Identity.value is ciphertext for emails and phones only (EncryptedTextField columns are found
# automatically by `manage.py rotate_encryption_key`).
ENCRYPTED_COLUMNS = [EncryptedColumn("profiles.Identity", "value", "kind IN ('email', 'phone')")]
