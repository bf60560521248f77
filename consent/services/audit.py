"""Business operations of the consent app."""

from cdp.middleware import current_request_id
from consent.models import AuditEntry


def audit_record(*, actor=None, actor_key=None, action: str, object_type: str, object_id="",
                 details: dict | None = None) -> AuditEntry:
    """Append an audit entry. Never pass personal data in `details` (ids, counts, reasons only)."""
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(actor=user, actor_key=actor_key, action=action, object_type=object_type,
                                     object_id=str(object_id), details=details or {},
                                     request_id=current_request_id())
