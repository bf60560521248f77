"""Cross-app notifications that must not create import cycles.

`profiles` (collect, unify) runs before `segments` (segment) in the flow and must not import
it. When profiles change, profiles calls `profiles_changed`, which enqueues the segments app's
real-time evaluation by task name — if that task exists in this code base.
"""

from celery import current_app
from django.db import transaction

REALTIME_TASK = "segments.realtime_evaluate"


def profiles_changed(*, profile_ids, event_names=(), trait_names=()) -> bool:
    """After commit, ask segments to re-evaluate these profiles; True if a task was queued.

    Call it inside the transaction that made the change: the task is sent on commit only.
    Include absorbed profiles of a merge and new profiles of an un-merge in `profile_ids`.
    """
    ids = sorted({str(profile_id) for profile_id in profile_ids})
    if not ids or REALTIME_TASK not in current_app.tasks:
        return False
    kwargs = {"profile_ids": ids, "event_names": sorted(set(event_names)), "trait_names": sorted(set(trait_names))}
    transaction.on_commit(lambda: current_app.send_task(REALTIME_TASK, kwargs=kwargs))
    return True
