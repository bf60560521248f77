"""Notifications between stages of the flow that must not create import cycles.

A stage never imports a later one. It announces what happened, and the announcement enqueues
the next stage's task by name, if that task exists in this code base:

- ingestion stored events            -> `events_ingested`   -> identity resolution
- identity resolution changed people -> `profiles_changed`  -> segments' real-time evaluation
  (the change is queued in the caller's transaction, a drain task follows on commit)
- purchases attached or imported     -> `transactions_changed` -> computed traits (RFM, ...)
- current consent of profiles changed -> `consent_changed`   -> segments (webhooks, lookup
  cache, consent conditions)
"""

from celery import current_app
from django.db import transaction

from cdp import flags

REALTIME_TASK = "segments.realtime_evaluate"
# Segments' real-time queue of changes: written in-process, in the transaction that changed the
# profiles (a change can never be lost between commit and a task message, and there is no task
# message per change to wait behind others); then one small drain task is sent on commit.
REALTIME_QUEUE_LISTENER = "segments.services.realtime.realtime_changes_queue"
REALTIME_DRAIN_TASK = "segments.realtime_drain"
# Sends REALTIME_DRAIN_TASK unless one is already queued (one message under sustained load).
REALTIME_DRAIN_REQUEST = "segments.services.realtime.realtime_drain_request"
RESOLVE_TASK = "profiles.identity_resolve_pending"
TRAITS_TASK = "profiles.computed_traits_refresh"
# Called in-process (not a task): lookups must stop answering from the cache on the very next
# request after a withdrawal commits.
CONSENT_LISTENER = "segments.services.consent.consent_changed"


_discovered = False


def _task_exists(name: str) -> bool:
    """Whether a task of this name is in the code base. Web processes never start a worker, so
    Celery's lazy autodiscovery has not imported the apps' tasks modules there yet: import them
    once (only the modules: no worker start-up checks)."""
    global _discovered
    if name not in current_app.tasks and not _discovered:
        from django.apps import apps

        current_app.loader.autodiscover_tasks([config.name for config in apps.get_app_configs()])
        _discovered = True
    return name in current_app.tasks


def _send_on_commit(name: str, kwargs: dict) -> bool:
    if not _task_exists(name):
        return False
    transaction.on_commit(lambda: current_app.send_task(name, kwargs=kwargs))
    return True


def events_ingested(*, source_id: int, count: int) -> bool:
    """After commit, ask identity resolution to attach newly stored events to profiles.

    The resolver claims every unresolved event (partial index `profiles_event_unresolved`),
    so one queued notification is enough (see RESOLVE_QUEUED_FLAG) and duplicates are harmless.
    `source_id` is kept for callers' logs; every source's events go.
    """
    if count <= 0:
        return False
    if not _task_exists(RESOLVE_TASK):
        return False
    transaction.on_commit(_resolve_request)
    return True


# Set while a resolution message is queued and its task has not started looking for events
# (cdp.flags): under sustained ingestion one message waits, not one per request (publishing a
# message cost ~3 ms of a 15 ms request of 100 events).
RESOLVE_QUEUED_FLAG = "cdp:identity:resolve-queued"


def _resolve_request() -> None:
    if flags.flag_set_once(RESOLVE_QUEUED_FLAG):
        current_app.send_task(RESOLVE_TASK, kwargs={})


def resolve_started() -> None:
    """Identity resolution is about to claim events: later commits need a message of their own."""
    flags.flag_clear(RESOLVE_QUEUED_FLAG)


def profiles_changed(*, profile_ids, event_names=(), trait_names=(), event_names_by_profile=None) -> bool:
    """After commit, ask segments to re-evaluate these profiles; True if a task was queued.

    `event_names_by_profile` (optional, {profile id: event names}): the events each profile's
    own change touched, so segments evaluate it only for the segments those events can change;
    profiles missing from it get `event_names`.

    Call it inside the transaction that made the change: the change is queued in it (segments'
    `RealtimeChange` rows commit or roll back with it) and the drain task is sent on commit only.
    Include absorbed profiles of a merge and new profiles of an un-merge in `profile_ids`.
    """
    ids = sorted({str(profile_id) for profile_id in profile_ids})
    if not ids:
        return False
    names = {"event_names": sorted(set(event_names)), "trait_names": sorted(set(trait_names))}
    from django.apps import apps

    if apps.is_installed("segments") and _task_exists(REALTIME_DRAIN_TASK):
        from django.utils.module_loading import import_string

        import_string(REALTIME_QUEUE_LISTENER)(profile_ids=ids, event_names_by_profile=event_names_by_profile,
                                               **names)
        transaction.on_commit(import_string(REALTIME_DRAIN_REQUEST))
        return True
    return _send_on_commit(REALTIME_TASK, {"profile_ids": ids, **names})


def transactions_changed(*, profile_ids) -> bool:
    """After commit, recompute computed traits (orders, RFM, ...) of these profiles."""
    ids = sorted({str(profile_id) for profile_id in profile_ids})
    if not ids:
        return False
    return _send_on_commit(TRAITS_TASK, {"profile_ids": ids})


def consent_changed(*, profile_ids, purposes) -> bool:
    """Current consent of these profiles changed for these purpose keys; call it inside the
    transaction that changed it. Segments take withdrawn people out of queued webhook
    deliveries in that transaction, invalidate their cached lookups right after commit (in this
    process), and re-evaluate segments with a consent condition (a task, on commit)."""
    ids = sorted({str(profile_id) for profile_id in profile_ids})
    if not ids:
        return False
    from django.apps import apps
    from django.utils.module_loading import import_string

    if apps.is_installed("segments"):
        import_string(CONSENT_LISTENER)(profile_ids=ids, purposes=sorted(set(purposes)))
    profiles_changed(profile_ids=ids, trait_names=["consent"])
    return True
