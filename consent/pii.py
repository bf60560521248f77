"""Where the consent app keeps personal data (see cdp/pii.py).

The ledger never holds a plaintext identifier or a profile id: its subject is a keyed hash from
the start, so erasure keeps it untouched as evidence (GDPR art. 7(1)) without rewriting it.
"""

from cdp.pii import NoPii, PiiLocation

SUBJECT = ("subject_kind", "subject_hash")

LOCATIONS = [
    PiiLocation("consent.AuditEntry", "object_id", on_erasure="keep_hashed",
                note="object_id may be a profile id: replaced by a keyed hash on erasure"),
    PiiLocation("consent.ConsentRecord", "", ("subject_hash", "page_url", "user_agent", "ip_hash"),
                on_erasure="keep_hashed", hash_columns=SUBJECT,
                note="append-only evidence; subject and IP are keyed hashes, the URL has no query string"),
    PiiLocation("consent.SubjectConsent", "", ("subject_hash",), hash_columns=SUBJECT,
                note="current decision per identifier (derived from the ledger)"),
    PiiLocation("consent.SubjectLink", "profile_id", ("subject_hash",)),
    PiiLocation("consent.ProfileConsent", "profile_id"),
    PiiLocation("consent.SuppressionEntry", "", ("value_hash",), on_erasure="keep_hashed",
                hash_columns=("kind", "value_hash"),
                note="kept on purpose: keyed hashes that stop an erased person from being recreated"),
    PiiLocation("consent.DataSubjectRequest", "profile_id", ("subject_value", "note", "profile_id", "result_file"),
                on_erasure="keep_hashed", hash_columns=SUBJECT,
                note="identifier, note, profile id and result file removed on erasure; the keyed hash stays"),
]
NO_PII = [
    NoPii("consent.Purpose", "configuration"),
    NoPii("consent.NoticeVersion", "texts shown to everyone"),
    NoPii("consent.CmpCategoryMapping", "configuration"),
    NoPii("consent.MinimisationRule", "configuration"),
    NoPii("consent.RetentionRule", "configuration"),
    NoPii("consent.ErasureReceipt", "counts per table, who and when; no identifiers"),
]
