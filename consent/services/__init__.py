"""Business operations of the consent app (see each module):

- audit: the audit log of staff actions (`audit_record`)
- ledger: canonical serialisation, hash-chained appends, verification, head export
- state: current consent per subject and profile, links, merges ("never widen")
- inputs: API / Segment context / import columns / staff decisions
- requests: data-subject requests (access, erasure, anonymisation, rectification), receipts
- retention: retention rules enforced on schedule
"""

from consent.services.audit import audit_record

__all__ = ["audit_record"]
