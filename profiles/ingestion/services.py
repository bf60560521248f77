"""Ingestion operations: an HTTP request in, events / transactions / rejections out.

`request_ingest` is the whole hot path behind the `/v1/...` views; `rejected_replay` feeds a
corrected rejection back through the same preparation and writer. Nothing here logs payloads
or identifiers: ids, counts and reason codes only.
"""

import base64
import binascii
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from cdp import apikeys, hooks
from consent.services import audit_record
from profiles.ingestion import gate, writer
from profiles.ingestion.body import KEPT_PREFIX_BYTES, Decoded, body_decode, text_for_storage
from profiles.ingestion.normalisation import Normalised, message_normalise
from profiles.ingestion.validation import Problem, message_check
from profiles.models import RejectedEvent, Source, SourceKey

logger = logging.getLogger(__name__)

BATCH_ROUTES = frozenset({"batch", "import", "b"})
SINGLE_ROUTES = {"identify": "identify", "track": "track", "page": "page", "screen": "screen", "group": "group",
                 "alias": "alias", "i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group",
                 "a": "alias"}
SOURCE_CACHE_SECONDS = 5.0
KEY_TOUCH_SECONDS = 60.0
_WRITE_KEY_RE = re.compile(rb'"writeKey"\s*:\s*"(?:[^"\\]|\\.)*"')
_source_cache: dict[int, tuple[float, "SourceSettings | None"]] = {}
_key_touched: dict[int, float] = {}


@dataclass(frozen=True, slots=True)
class SourceSettings:
    id: int
    allowed_origins: frozenset[str]
    events_per_minute: int
    channel: str

    def origin_allowed(self, origin: str) -> bool:
        return not origin or "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins


@dataclass(slots=True)
class Incoming:
    """An ingestion request as the view read it (body capped at the route's limit + 1 byte)."""

    endpoint: str
    raw: bytes
    content_encoding: str = ""
    authorization: str = ""
    origin: str = ""
    declared_length: int = 0
    received_at: datetime = field(default_factory=timezone.now)


@dataclass(slots=True)
class IngestResult:
    status: int = 200
    code: str = ""
    message: str = ""
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    retry_after: int | None = None

    def body(self) -> dict:
        if self.status == 200:
            return {"success": True}
        return {"success": False, "code": self.code, "message": self.message}


@dataclass(slots=True)
class Prepared:
    valid: list[Normalised] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    duplicates_in_request: int = 0
    # What the consent gate needs to normalise a minimised message again and to report an order.
    path_type: str | None = None
    source_id: int = 0
    received_at: datetime | None = None
    endpoint: str = ""
    envelope_sent_at: str | None = None


@dataclass(slots=True)
class Stored:
    stored: int = 0
    duplicates: int = 0
    dropped: int = 0
    rejected: int = 0


def route_limit(endpoint: str) -> int:
    """Byte limit of a route's (decompressed) body."""
    if endpoint in BATCH_ROUTES:
        return settings.CDP_INGEST_MAX_BATCH_BYTES
    return settings.CDP_INGEST_MAX_MESSAGE_BYTES


# -- sources, keys, quota ----------------------------------------------------------------------

def source_settings(source_id: int) -> SourceSettings | None:
    """What ingestion needs of a source, cached in-process for a few seconds (hot path)."""
    now = time.monotonic()
    cached = _source_cache.get(source_id)
    if cached and cached[0] > now:
        return cached[1]
    row = Source.objects.filter(pk=source_id, is_active=True).values(
        "allowed_origins", "events_per_minute_limit", "kind").first()
    found = None
    if row:
        channel = "app" if row["kind"] == Source.Kind.APP else "web"
        found = SourceSettings(source_id, frozenset(o.rstrip("/") for o in row["allowed_origins"]),
                               row["events_per_minute_limit"] or settings.CDP_INGEST_EVENTS_PER_MINUTE, channel)
    _source_cache[source_id] = (now + SOURCE_CACHE_SECONDS, found)
    return found


def source_cache_clear() -> None:
    _source_cache.clear()


def basic_username(header: str) -> str | None:
    """The username of an HTTP Basic header (Segment's write key), None when there is none."""
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.split(":", 1)[0]


def _key_touch(key_id: int) -> None:
    """Keep SourceKey.last_used_at roughly current: one UPDATE per key per minute per process."""
    now = time.monotonic()
    if _key_touched.get(key_id, 0) > now:
        return
    _key_touched[key_id] = now + KEY_TOUCH_SECONDS
    SourceKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())


def quota_take(*, source_id: int, limit: int, count: int, now: float | None = None) -> int | None:
    """Count `count` messages against the source's per-minute quota in the shared cache; return
    Retry-After seconds when that would exceed it (the refused messages are not counted)."""
    now = time.time() if now is None else now
    key = f"ingest:quota:{source_id}:{int(now // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        used = cache.incr(key, count)
    except ValueError:  # expired between add and incr
        cache.set(key, count, timeout=120)
        used = count
    if used <= limit:
        return None
    cache.decr(key, count)
    return max(1, 60 - int(now % 60))


def _unauthenticated_allowance() -> bool:
    limit = settings.CDP_INGEST_UNAUTHENTICATED_REJECTS_PER_MINUTE
    key = f"ingest:unauthenticated:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=120)
    try:
        return cache.incr(key) <= limit
    except ValueError:
        return True


# -- the request -------------------------------------------------------------------------------

def request_ingest(*, incoming: Incoming) -> IngestResult:
    """Authenticate, decode, validate and store one ingestion request (see the module doc)."""
    limit = route_limit(incoming.endpoint)
    basic_key = basic_username(incoming.authorization)
    decoded = body_decode(incoming.raw, content_encoding=incoming.content_encoding, limit=limit)
    if decoded.problem:
        resolved = apikeys.key_resolve(basic_key, kind=SourceKey.Kind.WRITE) if basic_key else None
        return _refuse(incoming, decoded, decoded.status, decoded.problem, resolved.source_id if resolved else None)
    body = decoded.data
    raw_key = basic_key if basic_key else body.get("writeKey")
    if not raw_key or not isinstance(raw_key, str):
        return _refuse(incoming, decoded, 401, Problem("missing_write_key", "Send the write key as the HTTP Basic "
                                                       "username or as writeKey in the body."), None)
    resolved = apikeys.key_resolve(raw_key, kind=SourceKey.Kind.WRITE)
    source = source_settings(resolved.source_id) if resolved else None
    if source is None:
        return _refuse(incoming, decoded, 401, Problem("invalid_write_key", "The write key is unknown, revoked or "
                                                       "expired."), None, key_prefix=raw_key[:10])
    _key_touch(resolved.key_id)
    if not source.origin_allowed(incoming.origin):
        return _refuse(incoming, decoded, 403, Problem("origin_not_allowed", "This source does not accept events "
                                                       "from this browser origin; add it to the source's allowed "
                                                       "origins."), source.id)
    items, path_type, problem = _items_of(incoming.endpoint, body)
    if problem:
        return _refuse(incoming, decoded, 413 if problem.code == "batch_too_many_messages" else 400, problem, source.id)
    retry_after = quota_take(source_id=source.id, limit=source.events_per_minute, count=len(items))
    if retry_after is not None:
        logger.info("ingestion quota exceeded", extra={"source_id": source.id, "messages": len(items)})
        return IngestResult(status=429, code="rate_limited", retry_after=retry_after,
                            message=f"This source sends more than {source.events_per_minute:,} messages per minute; "
                                    f"retry after {retry_after} s.")
    prepared = messages_prepare(items, path_type=path_type, envelope=body, source_id=source.id,
                                received_at=incoming.received_at, endpoint=incoming.endpoint,
                                check_sizes=len(decoded.text_bytes) > settings.CDP_INGEST_MAX_MESSAGE_BYTES)
    if path_type is not None and not prepared.valid:
        # A single message that is invalid: 400 with the reason, and kept for replay.
        rejection = prepared.rejections[0]
        result = IngestResult(status=400, code=rejection["reason"], message=rejection["message"])
    else:
        result = IngestResult()
    outcome = messages_store(prepared, source=source, received_at=incoming.received_at, source_key_id=resolved.key_id)
    result.stored, result.duplicates, result.dropped = outcome.stored, outcome.duplicates, outcome.dropped
    result.rejected = outcome.rejected
    # Debug: one line per request is the access log's job; refusals and problems log at INFO.
    logger.debug("ingested", extra={"source_id": source.id, "endpoint": incoming.endpoint, "stored": outcome.stored,
                                   "duplicates": outcome.duplicates, "rejected": result.rejected,
                                   "dropped": outcome.dropped})
    return result


def _items_of(endpoint: str, body: dict) -> tuple[list, str | None, Problem | None]:
    if endpoint not in BATCH_ROUTES:
        return [(None, body)], SINGLE_ROUTES[endpoint], None
    batch = body.get("batch")
    if not isinstance(batch, list):
        return [], None, Problem("missing_batch", "The body needs a batch: a list of messages.")
    if len(batch) > settings.CDP_INGEST_MAX_BATCH_MESSAGES:
        return [], None, Problem("batch_too_many_messages", f"A batch holds at most "
                                 f"{settings.CDP_INGEST_MAX_BATCH_MESSAGES:,} messages; this one has {len(batch):,}.")
    return list(enumerate(batch)), None, None


def _storable_text(data: bytes) -> str:
    """A body kept for inspection, with any write key in it blanked (a secret, and useless for replay)."""
    return text_for_storage(_WRITE_KEY_RE.sub(b'"writeKey":"[removed]"', data))


def _refuse(incoming: Incoming, decoded: Decoded, status: int, problem: Problem, source_id: int | None,
            key_prefix: str = "") -> IngestResult:
    """Answer a request-level failure and keep what was sent as a RejectedEvent (unattributable
    requests only up to the per-minute allowance)."""
    logger.info("ingestion request refused", extra={"source_id": source_id, "endpoint": incoming.endpoint,
                                                    "reason": problem.code, "status": status})
    if source_id is not None or _unauthenticated_allowance():
        kept = decoded.text_bytes or incoming.raw[:KEPT_PREFIX_BYTES]
        size = max(decoded.full_size, len(decoded.text_bytes), incoming.declared_length, len(incoming.raw))
        text = _storable_text(kept)
        parsed = decoded.data is not None
        row = _rejection_row(source_id=source_id, received_at=incoming.received_at, endpoint=incoming.endpoint,
                             problem=problem, index=None, payload=text if parsed else None,
                             raw_body="" if parsed else text, key_prefix=key_prefix)
        row.update(size_bytes=size, truncated=len(kept) < size)
        with transaction.atomic(), connection.cursor() as cursor:
            writer.rejections_copy(cursor.cursor, [row])
    return IngestResult(status=status, code=problem.code, message=problem.message, rejected=1)


def _rejection_row(*, source_id, received_at, endpoint, problem: Problem, index, payload, raw_body="",
                   key_prefix="") -> dict:
    return {"source_id": source_id, "received_at": received_at, "endpoint": endpoint, "reason": problem.code,
            "message": problem.message, "batch_index": index, "payload": payload, "raw_body": raw_body,
            "size_bytes": len(payload or raw_body or ""), "truncated": False, "key_prefix": key_prefix,
            "replay_note": ""}


def _with_envelope(item: dict, envelope: dict) -> dict:
    """A batch item with the envelope's context / integrations merged in (the item's keys win)."""
    merged = item
    for key in ("context", "integrations"):
        shared, own = envelope.get(key), item.get(key)
        if not isinstance(shared, dict) or not shared:
            continue
        if own is None:
            merged = {**merged, key: shared}
        elif isinstance(own, dict):
            merged = {**merged, key: {**shared, **own}}
        # any other type stays as sent and is reported by validation
    return merged


def messages_prepare(items: list[tuple[int | None, object]], *, path_type: str | None, envelope: dict,
                     source_id: int, received_at: datetime, endpoint: str, check_sizes: bool) -> Prepared:
    """Validate and normalise; invalid messages become rejection rows with their batch index (an
    order's problem is reported later, only if consent lets its event be kept)."""
    envelope_sent_at = envelope.get("sentAt") if isinstance(envelope.get("sentAt"), str) else None
    prepared, seen = Prepared(path_type=path_type, source_id=source_id, received_at=received_at, endpoint=endpoint,
                              envelope_sent_at=envelope_sent_at), set()
    merge = path_type is None and any(isinstance(envelope.get(k), dict) for k in ("context", "integrations"))
    max_bytes = settings.CDP_INGEST_MAX_MESSAGE_BYTES
    for index, original in items:
        item = _with_envelope(original, envelope) if merge and isinstance(original, dict) else original
        problem = None
        if check_sizes and isinstance(item, dict) and len(orjson.dumps(item)) > max_bytes:
            problem = Problem("message_too_large", f"A message may be at most {max_bytes:,} bytes.")
        if problem is None:
            message, problem = message_check(item, path_type=path_type)
        if problem is None:
            normalised, problem = message_normalise(message, item, source_id=source_id, received_at=received_at,
                                                    envelope_sent_at=envelope_sent_at)
        if problem is not None:
            prepared.rejections.append(_item_rejection(item, index, problem, source_id, received_at, endpoint,
                                                       envelope_sent_at))
            continue
        if normalised.message_id in seen:
            prepared.duplicates_in_request += 1
            continue
        seen.add(normalised.message_id)
        normalised.index = index
        prepared.valid.append(normalised)
    return prepared


def _order_rejections(prepared: Prepared, kept: list[Normalised]) -> list[dict]:
    """Kept events whose order part is invalid: the event is stored, its transaction rejected."""
    return [_item_rejection(n.item, n.index, n.order_problem, prepared.source_id, prepared.received_at,
                            prepared.endpoint, prepared.envelope_sent_at) for n in kept if n.order_problem]


def _item_rejection(item, index, problem, source_id, received_at, endpoint, envelope_sent_at) -> dict:
    # Keep the item self-contained for replay: the batch's sentAt travels with it.
    if isinstance(item, dict):
        item = {key: value for key, value in item.items() if key != "writeKey"}
        if envelope_sent_at and "sentAt" not in item:
            item["sentAt"] = envelope_sent_at
    payload = orjson.dumps(item).decode()
    return _rejection_row(source_id=source_id, received_at=received_at, endpoint=endpoint, problem=problem,
                          index=index, payload=payload)


def messages_store(prepared: Prepared, *, source: SourceSettings, received_at: datetime,
                   source_key_id: int | None = None) -> Stored:
    """Admit by consent, then write one request's events (deduplicated), orders, rejections and
    dropped counts in one transaction. Retries a deadlock between concurrent retries of a batch."""
    for attempt in range(3):
        try:
            return _store_once(prepared, source=source, received_at=received_at, source_key_id=source_key_id)
        except OperationalError as exc:
            if attempt == 2 or "deadlock" not in str(exc):
                raise
            logger.warning("ingestion deadlock, retrying", extra={"source_id": source.id, "attempt": attempt})
    raise AssertionError("unreachable")


@transaction.atomic
def _store_once(prepared: Prepared, *, source: SourceSettings, received_at: datetime,
                source_key_id: int | None) -> Stored:
    admitted = gate.messages_admit(prepared.valid, path_type=prepared.path_type, source_id=source.id,
                                   received_at=received_at, envelope_sent_at=prepared.envelope_sent_at,
                                   source_key_id=source_key_id)
    kept = admitted.kept
    rejections = prepared.rejections + _order_rejections(prepared, kept)
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        stored = writer.events_insert_fresh(cursor, source_id=source.id, received_at=received_at,
                                            rows=[n.row for n in kept])
        orders = {}
        for normalised in kept:
            if normalised.order is not None:
                orders.setdefault(normalised.order.order_id, normalised.order)
        writer.orders_insert(cursor, source_id=source.id, channel=source.channel, orders=list(orders.values()),
                             created_at=timezone.now())
        if rejections:
            writer.rejections_copy(cursor, rejections)
        # Last statement before COMMIT: the counter row lock is held for the commit only.
        writer.dropped_count(cursor, source_id=source.id, received_at=received_at, counts=admitted.dropped)
    hooks.events_ingested(source_id=source.id, count=stored)
    dropped = sum(admitted.dropped.values())
    return Stored(stored, len(kept) - stored + prepared.duplicates_in_request, dropped, len(rejections))


# -- maintenance -------------------------------------------------------------------------------

def event_dedupe_purge(*, now: datetime | None = None, batch_size: int = 50_000, max_batches: int = 20) -> tuple[int, bool]:
    """Delete dedupe rows older than the window in bounded batches; return (deleted, more left)."""
    before = (now or timezone.now()) - timedelta(days=settings.CDP_INGEST_DEDUPE_DAYS)
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            count = writer.dedupe_purge_batch(cursor.cursor, before=before, batch_size=batch_size)
        deleted += count
        if count < batch_size:
            return deleted, False
    return deleted, True


# -- rejected events: view, correct, replay ----------------------------------------------------

@dataclass(slots=True)
class ReplayOutcome:
    replayed: bool
    note: str
    stored: int = 0
    duplicates: int = 0
    rejected_again: int = 0
    dropped: int = 0


def rejected_payload_read(*, rejected: RejectedEvent, actor) -> str:
    """The decrypted payload (or raw body) for a staff member; the read is audited."""
    audit_record(actor=actor, action="rejected_event.viewed", object_type="rejected_event", object_id=rejected.pk,
                 details={"reason": rejected.reason, "source_id": rejected.source_id})
    return rejected.payload if rejected.payload is not None else rejected.raw_body


@transaction.atomic
def rejected_payload_update(*, rejected: RejectedEvent, text: str, actor) -> Problem | None:
    """Store a corrected payload (must be a JSON object); audited. Returns the problem, if any."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return Problem("invalid_json", f"Not valid JSON: {str(exc)[:200]}")
    if not isinstance(data, dict):
        return Problem("invalid_json", "The payload must be a JSON object.")
    if rejected.replayed_at:
        return Problem("already_replayed", "This rejected event was already replayed.")
    rejected.payload, rejected.raw_body = text, ""
    rejected.truncated = False
    rejected.save(update_fields=["payload", "raw_body", "truncated"])
    audit_record(actor=actor, action="rejected_event.corrected", object_type="rejected_event", object_id=rejected.pk,
                 details={"reason": rejected.reason, "bytes": len(text)})
    return None


def rejected_replay(*, rejected_id: int, source_id: int | None = None, actor=None) -> ReplayOutcome:
    """Feed a rejection (as corrected) through validation and the writer again; mark it replayed
    when it now goes through. `source_id` attributes rejections that had no source (bad key)."""
    with transaction.atomic():
        rejected = RejectedEvent.objects.select_for_update().get(pk=rejected_id)
        if rejected.replayed_at:
            return ReplayOutcome(False, "Already replayed.")
        target = source_id or rejected.source_id
        outcome = _replay_locked(rejected, target)
        changes = {"replay_note": outcome.note[:2000]}
        if outcome.replayed:
            changes.update(replayed_at=timezone.now(), replayed_by=actor if getattr(actor, "pk", None) else None,
                           source_id=target)
        RejectedEvent.objects.filter(pk=rejected.pk).update(**changes)
        audit_record(actor=actor, action="rejected_event.replayed", object_type="rejected_event",
                     object_id=rejected.pk, details={"replayed": outcome.replayed, "stored": outcome.stored,
                                                     "rejected_again": outcome.rejected_again, "source_id": target})
    logger.info("rejected event replayed", extra={"rejected_id": rejected_id, "replayed": outcome.replayed,
                                                  "stored": outcome.stored})
    return outcome


def _replay_locked(rejected: RejectedEvent, source_id: int | None) -> ReplayOutcome:
    source = Source.objects.filter(pk=source_id).first() if source_id else None
    if source is None:
        return ReplayOutcome(False, "No source: choose the source these events belong to.")
    if not source.is_active:
        return ReplayOutcome(False, f"The source {source.name!r} is deactivated.")
    if rejected.truncated:
        return ReplayOutcome(False, "Only the beginning of this oversize input was kept; it cannot be replayed.")
    try:
        data = orjson.loads(rejected.payload or rejected.raw_body or "")
    except orjson.JSONDecodeError:
        return ReplayOutcome(False, "The payload is not valid JSON; correct it first.")
    if not isinstance(data, dict):
        return ReplayOutcome(False, "The payload must be a JSON object; correct it first.")
    single = rejected.batch_index is not None or rejected.endpoint in SINGLE_ROUTES
    if single:
        path_type = None if rejected.batch_index is not None else SINGLE_ROUTES[rejected.endpoint]
        items, envelope = [(rejected.batch_index, data)], {}
    else:
        items, path_type, problem = _items_of(rejected.endpoint, data)
        if problem:
            return ReplayOutcome(False, f"{problem.code}: {problem.message}")
        envelope = data
    channel = "app" if source.kind == Source.Kind.APP else "web"
    target = SourceSettings(source.id, frozenset(), 0, channel)
    prepared = messages_prepare(items, path_type=path_type, envelope=envelope, source_id=source.id,
                                received_at=rejected.received_at, endpoint=rejected.endpoint, check_sizes=True)
    problems = [(r["reason"], r["message"]) for r in prepared.rejections] + [
        (n.order_problem.code, n.order_problem.message) for n in prepared.valid if n.order_problem]
    if single and problems:
        return ReplayOutcome(False, f"Still rejected: {problems[0][0]}: {problems[0][1]}")
    # Replayed events pass the same consent gate as live ones.
    outcome = messages_store(prepared, source=target, received_at=rejected.received_at)
    note = f"Stored {outcome.stored} event(s), {outcome.duplicates} already present"
    if outcome.dropped:
        note += f", {outcome.dropped} not kept for lack of consent (counted only)"
    if outcome.rejected:
        note += f", {outcome.rejected} rejected again (listed as new rejected events)"
    return ReplayOutcome(True, note + ".", stored=outcome.stored, duplicates=outcome.duplicates,
                         rejected_again=outcome.rejected, dropped=outcome.dropped)


# -- sources and their keys (staff screens) ----------------------------------------------------

@transaction.atomic
def source_create(*, name: str, kind: str, allowed_origins: list[str], is_authoritative: bool = False,
                  events_per_minute_limit: int | None = None, actor=None) -> tuple[Source, str]:
    """Create a source with its first write key; return both (the raw key is never shown again)."""
    source = Source.objects.create(name=name, kind=kind, allowed_origins=allowed_origins,
                                   is_authoritative=is_authoritative, events_per_minute_limit=events_per_minute_limit,
                                   created_by=actor)
    _, raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE, created_by=actor)
    audit_record(actor=actor, action="source.created", object_type="source", object_id=source.pk,
                 details={"kind": kind})
    return source, raw


@transaction.atomic
def source_update(*, source: Source, allowed_origins: list[str], events_per_minute_limit: int | None,
                  is_authoritative: bool, is_active: bool, actor=None) -> Source:
    """Change a source's origins, quota, precedence or activity (takes effect within seconds)."""
    source.allowed_origins, source.events_per_minute_limit = allowed_origins, events_per_minute_limit
    source.is_authoritative, source.is_active = is_authoritative, is_active
    source.save(update_fields=["allowed_origins", "events_per_minute_limit", "is_authoritative", "is_active"])
    audit_record(actor=actor, action="source.updated", object_type="source", object_id=source.pk,
                 details={"origins": len(allowed_origins), "is_active": is_active})
    source_cache_clear()
    apikeys._cache.clear()  # a deactivated source's keys stop resolving in this process at once
    return source


@transaction.atomic
def source_key_issue(*, source: Source, kind: str, actor=None) -> tuple[SourceKey, str]:
    """An additional write or read key for the source (raw key returned once)."""
    key, raw = apikeys.source_key_create(source=source, kind=kind, created_by=actor)
    audit_record(actor=actor, action="source_key.created", object_type="source", object_id=source.pk,
                 details={"key_id": key.pk, "kind": kind})
    return key, raw


@transaction.atomic
def source_key_rotate_audited(*, key: SourceKey, overlap: timedelta, actor=None) -> tuple[SourceKey, str]:
    """Rotate: a new key now, the old one working for `overlap` more."""
    new, raw = apikeys.source_key_rotate(key=key, overlap=overlap, created_by=actor)
    audit_record(actor=actor, action="source_key.rotated", object_type="source", object_id=key.source_id,
                 details={"old_key_id": key.pk, "new_key_id": new.pk, "overlap_seconds": int(overlap.total_seconds())})
    return new, raw


@transaction.atomic
def source_key_revoke_audited(*, key: SourceKey, actor=None) -> None:
    """Revoke at once (cannot be undone: issue a new key instead)."""
    apikeys.source_key_revoke(key=key)
    audit_record(actor=actor, action="source_key.revoked", object_type="source", object_id=key.source_id,
                 details={"key_id": key.pk})
