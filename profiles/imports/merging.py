"""Merge requests raised by imports.

When one imported row carries identifiers that already belong to two (or more) DIFFERENT
profiles, the row says those profiles are one person. Merging is identity resolution's job (its
merge service records, applies and can undo merges); until the integrator points this function
at that service, the pairs are recorded as pending merges and shown on the import's report.
"""

from django.db import connection

from profiles.models import PendingMerge


def merge_requests_submit(*, pairs, job_id: int | None = None) -> int:
    """Record each (profile, profile) pair once; returns how many pairs were new.

    Runs inside the import's transaction, so a rolled-back import requests nothing.
    """
    ordered = sorted({(min(str(a), str(b)), max(str(a), str(b))) for a, b in pairs if a and b and str(a) != str(b)})
    if not ordered:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO profiles_pendingmerge (job_id, profile_a_id, profile_b_id, reason, created_at) "
            "SELECT %s, a::uuid, b::uuid, %s, now() FROM unnest(%s::text[], %s::text[]) AS p(a, b) "
            "ON CONFLICT (profile_a_id, profile_b_id) DO NOTHING",
            [job_id, "crm_row", [a for a, _ in ordered], [b for _, b in ordered]],
        )
        return cursor.rowcount


def pending_merges_count() -> int:
    return PendingMerge.objects.filter(handled_at__isnull=True).count()
