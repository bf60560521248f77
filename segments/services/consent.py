"""What segments do when a person's current consent changes (`cdp.hooks.consent_changed`).

Membership stays true to the rules; consent is applied where segment data leaves: lookups,
exports and webhooks. So a change only has to reach what is already prepared for leaving:

- queued webhook deliveries lose the people who withdrew a purpose their segment requires, in
  the consent transaction itself (a delivery left with nobody is cancelled, visible in the log);
- cached lookup answers of those people are invalidated right after the commit, synchronously in
  the committing process: a queued task could let the very next lookup answer from the cache.

Segments with a `consent` condition re-evaluate through the real-time path (the hook sends the
trait name "consent").
"""

import logging
from uuid import UUID

from django.db import connection, transaction

from segments.models import Segment, WebhookDelivery
from segments.purposes import profiles_with_purposes
from segments.services.webhooks import CANCELLED_REASON

logger = logging.getLogger(__name__)

# Index: webhook_due_idx (status, next_attempt_at) and the segment foreign key; pending
# deliveries are few. Payload entries of the given profiles are dropped; a delivery left empty
# is cancelled.
_WITHHOLD = """
WITH hit AS (
    SELECT d.id, jsonb_agg(e.item ORDER BY e.n) FILTER (WHERE NOT (e.item ->> 'profile_id') = ANY(%(ids)s)) AS kept,
           count(*) FILTER (WHERE (e.item ->> 'profile_id') = ANY(%(ids)s)) AS removed
    FROM segments_webhookdelivery d
    CROSS JOIN LATERAL jsonb_array_elements(d.payload -> 'profiles') WITH ORDINALITY AS e(item, n)
    WHERE d.segment_id = %(segment)s AND d.status = 'pending'
    GROUP BY d.id
    HAVING count(*) FILTER (WHERE (e.item ->> 'profile_id') = ANY(%(ids)s)) > 0
)
UPDATE segments_webhookdelivery d
SET payload = jsonb_set(d.payload, '{profiles}', coalesce(hit.kept, '[]'::jsonb)),
    profile_count = d.profile_count - hit.removed, withheld_count = d.withheld_count + hit.removed,
    status = CASE WHEN hit.kept IS NULL THEN 'cancelled' ELSE d.status END,
    next_attempt_at = CASE WHEN hit.kept IS NULL THEN NULL ELSE d.next_attempt_at END,
    last_error = CASE WHEN hit.kept IS NULL THEN %(reason)s ELSE d.last_error END
FROM hit WHERE d.id = hit.id
"""


def consent_changed(*, profile_ids: list[str], purposes: list[str]) -> None:
    """Called inside the transaction that changed consent (see module docstring)."""
    deliveries_withhold(profile_ids=profile_ids, purposes=purposes)
    from segments.lookup import lookup_cache_invalidate_profiles

    # robust: the consent change is committed; a cache outage must not turn it into an error.
    transaction.on_commit(lambda: lookup_cache_invalidate_profiles(profile_ids=profile_ids), robust=True)


def deliveries_withhold(*, profile_ids: list[str], purposes: list[str]) -> int:
    """Take people who no longer grant a required purpose out of pending deliveries; returns
    how many deliveries changed."""
    segments = list(Segment.objects.filter(required_purposes__overlap=list(purposes)).filter(
        deliveries__status=WebhookDelivery.Status.PENDING).distinct().only("id", "required_purposes"))
    if not segments:
        return 0
    ids = {UUID(str(profile_id)) for profile_id in profile_ids}
    removed = 0
    with connection.cursor() as cursor:
        for segment in segments:
            gone = ids - profiles_with_purposes(profile_ids=ids, purposes=segment.required_purposes)
            if not gone:
                continue
            cursor.execute(_WITHHOLD, {"ids": sorted(str(p) for p in gone), "segment": segment.pk,
                                       "reason": CANCELLED_REASON})
            removed += cursor.rowcount
    if removed:
        logger.info("webhook deliveries withheld after consent change", extra={"deliveries": removed})
    return removed
