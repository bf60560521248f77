from cdp.pii import NoPii, PiiLocation

LOCATIONS = [
    PiiLocation("consent.AuditEntry", "object_id", on_erasure="keep_hashed",
                note="object_id may be a profile id: replaced by a keyed hash on erasure"),
]
NO_PII = [NoPii("consent.Purpose", "configuration")]
