"""Celery entry points of the segments app: ids in, one service call, done."""

import logging

from celery import shared_task

from segments.services import realtime, recompute, webhooks

logger = logging.getLogger(__name__)

# Backoff for a failed recompute: 30 s, 2 min, 8 min; then the segment shows as failing until
# its next scheduled run (which is never skipped).
RECOMPUTE_RETRIES = 3
REALTIME_RETRY_LIMIT = 200


@shared_task(bind=True, max_retries=RECOMPUTE_RETRIES, acks_late=True)
def segment_recompute_task(self, run_id: int) -> str:
    """Run one queued recompute; failures are recorded on the run and the segment, then retried."""
    try:
        return recompute.segment_recompute(run_id=run_id).status
    except Exception as exc:
        raise self.retry(exc=exc, countdown=30 * 4 ** self.request.retries) from None


@shared_task(name="segments.realtime_evaluate", bind=True, acks_late=True, time_limit=300)
def realtime_evaluate_task(self, profile_ids: list[str], event_names: list[str] = (), trait_names: list[str] = (),
                           segment_ids: list[int] | None = None, attempt: int = 0) -> dict:
    """Re-evaluate changed profiles (sent by cdp.hooks.profiles_changed after identity resolution):
    queue the change and drain the queue; with `segment_ids`, a retry for segments a recompute held."""
    if segment_ids is not None:
        result = realtime.realtime_evaluate(profile_ids=profile_ids, event_names=event_names,
                                            trait_names=trait_names, segment_ids=segment_ids)
        _retry_locked(profile_ids, event_names, trait_names, result.locked, attempt)
        return {"evaluated": len(result.evaluated), "entered": result.entered, "exited": result.exited,
                "locked": len(result.locked)}
    realtime.realtime_changes_queue(profile_ids=profile_ids, event_names=event_names, trait_names=trait_names)
    return _drain()


def _drain() -> dict:
    batches, more = realtime.realtime_drain()
    for batch in batches:
        _retry_locked(batch.profile_ids, batch.event_names, batch.trait_names, batch.result.locked, 0)
    if more:
        realtime_drain_task.delay()
    return {"batches": len(batches), "profiles": sum(len(b.profile_ids) for b in batches),
            "entered": sum(b.result.entered for b in batches), "exited": sum(b.result.exited for b in batches)}


def _retry_locked(profile_ids, event_names, trait_names, locked: list[int], attempt: int) -> None:
    if not locked:
        return
    if attempt < REALTIME_RETRY_LIMIT:
        # A recompute holds those segments; it cannot have seen this change if it began
        # earlier, so evaluate again once it has swapped.
        realtime_evaluate_task.apply_async(
            kwargs={"profile_ids": list(profile_ids), "event_names": list(event_names),
                    "trait_names": list(trait_names), "segment_ids": locked, "attempt": attempt + 1},
            countdown=min(5.0, 0.5 * (attempt + 1)))
    else:
        logger.warning("real-time evaluation gave up waiting for a recompute",
                       extra={"segment_ids": locked, "profiles": len(profile_ids)})


@shared_task(name="segments.realtime_drain", acks_late=True, time_limit=300)
def realtime_drain_task() -> dict:
    """Evaluate queued changes (sent after changes commit, and to continue a long drain)."""
    realtime.realtime_drain_started()
    return _drain()


@shared_task(time_limit=300)
def timers_sweep_task() -> int:
    """Re-evaluate profiles whose answer may have changed by time alone; continue while busy.
    Also drains queued changes a lost task message would otherwise leave waiting."""
    _drain()
    handled = realtime.timers_sweep()
    if handled >= realtime.SWEEP_LIMIT:
        timers_sweep_task.delay()
    return handled


@shared_task(time_limit=120)
def recompute_dispatch_task() -> int:
    """Queue the segments whose schedule is due (beat, every 30 s)."""
    return recompute.recompute_dispatch()


@shared_task(time_limit=1800)
def membership_cleanup_task(segment_id: int) -> int:
    """Delete membership rows closed by a recompute, in batches."""
    return recompute.membership_cleanup(segment_id=segment_id)


@shared_task(time_limit=60)
def webhook_deliver_task(delivery_id: int) -> str | None:
    """One attempt of one webhook delivery."""
    return webhooks.webhook_deliver(delivery_id=delivery_id)


@shared_task(time_limit=60)
def webhooks_deliver_due_task() -> int:
    """Send every due webhook delivery (after changes, and on beat for retries)."""
    due = webhooks.webhooks_due()
    for delivery_id in due:
        webhook_deliver_task.delay(delivery_id=delivery_id)
    return len(due)
