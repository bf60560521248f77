"""Consent at the door of the events table (issue 6, "Enforcement"), a bounded number of queries
per request, never per message:

1. `context.consent.categoryPreferences` of the messages go to the ledger first (changes only),
   so a message that carries a grant is itself kept (one query; more only when something changed);
2. one query reads every purpose's state and the suppression entries of each message's
   identifiers (`consent.enforcement.identifier_sets_consent`);
3. a message is kept only with analytics granted (fail closed: no decision = no) and, when one of
   its identifiers belongs to an erased person, only if that grant was decided after the erasure
   (new consent); everything else is counted per reason, never stored;
4. kept messages are minimised (`message_minimise`, rules in `MinimisationRule`) for the purposes
   not granted, and normalised again when a rule changed them.

Identifiers are hashed with the same keyed hash identity resolution and the ledger use.
"""

from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from consent.enforcement import SetConsent, identifier_sets_consent, message_minimise
from consent.services.inputs import consent_from_segment_messages
from profiles.identifiers import identity_hash, normalize
from profiles.ingestion.normalisation import Normalised, message_normalise
from profiles.ingestion.validation import message_check
from profiles.models import DroppedEventCount

ANALYTICS = "analytics"
# Plain strings (Counter keys, SQL parameters), the values of DroppedEventCount.Reason.
NO_CONSENT = DroppedEventCount.Reason.NO_CONSENT.value
SUPPRESSED = DroppedEventCount.Reason.SUPPRESSED.value
MINIMISED_INVALID = DroppedEventCount.Reason.MINIMISED_INVALID.value
_HASH_CACHE_LIMIT = 200_000
_hashes: dict[tuple[str, str], bytes | None] = {}
_hash_key = ""


@dataclass(slots=True)
class Admitted:
    kept: list[Normalised] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)


def _hashed(kind: str, raw: str) -> bytes | None:
    """Keyed hash of a normalised identifier, cached per process (a site repeats its visitors)."""
    global _hash_key
    if _hash_key != settings.CDP_HASH_KEY or len(_hashes) > _HASH_CACHE_LIMIT:
        _hashes.clear()
        _hash_key = settings.CDP_HASH_KEY
    key = (kind, raw)
    if key not in _hashes:
        value = normalize(kind, raw)
        _hashes[key] = identity_hash(kind, value) if value else None
    return _hashes[key]


def identifier_set(normalised: Normalised) -> list[tuple[str, bytes]]:
    """(kind, keyed hash) of the usable identifiers of one message."""
    found = []
    for kind, raw in normalised.identifiers:
        digest = _hashed(kind, raw)
        if digest is not None:
            found.append((kind, digest))
    return found


def _carries_preferences(item: dict) -> bool:
    context = item.get("context")
    consent = context.get("consent") if isinstance(context, dict) else None
    return isinstance(consent, dict) and bool(consent.get("categoryPreferences"))


def _admissible(decision: SetConsent) -> str | None:
    """None when the message may be kept, else the reason it is dropped."""
    granted_at = decision.granted_at.get(ANALYTICS)
    if decision.suppressed_since is not None and (granted_at is None or granted_at <= decision.suppressed_since):
        return SUPPRESSED
    if granted_at is None:
        return NO_CONSENT
    return None


def messages_admit(valid: list[Normalised], *, path_type: str | None, source_id: int, received_at,
                   envelope_sent_at: str | None, source_key_id: int | None) -> Admitted:
    """Record consent the messages carry, then keep (minimised) the messages consent allows.
    Runs inside the ingestion transaction: a consent change and the events it admits commit together."""
    admitted = Admitted()
    if not valid:
        return admitted
    carrying = [n.item for n in valid if n.item is not None and _carries_preferences(n.item)]
    if carrying:
        consent_from_segment_messages(messages=carrying, source_key_id=source_key_id)
    decisions = identifier_sets_consent(identifier_sets=[identifier_set(n) for n in valid])
    for normalised, decision in zip(valid, decisions, strict=True):
        reason = _admissible(decision)
        if reason is None:
            normalised = _minimised(normalised, decision.granted, path_type=path_type, source_id=source_id,
                                    received_at=received_at, envelope_sent_at=envelope_sent_at)
            reason = MINIMISED_INVALID if normalised is None else None
        if reason is None:
            admitted.kept.append(normalised)
        else:
            admitted.dropped[reason] += 1
    return admitted


def _minimised(normalised: Normalised, granted: frozenset[str], *, path_type: str | None, source_id: int,
               received_at, envelope_sent_at: str | None) -> Normalised | None:
    """The message with the minimisation rules of the purposes not granted applied (the same
    object when no rule applies); None if a rule left it invalid."""
    item = normalised.item
    if item is None:
        return normalised
    typed = item if path_type is None or item.get("type") == path_type else {**item, "type": path_type}
    minimised = message_minimise(typed, granted_purposes=granted)
    if minimised is typed:
        return normalised
    message, problem = message_check(minimised, path_type=path_type)
    if problem is None:
        renewed, problem = message_normalise(message, minimised, source_id=source_id, received_at=received_at,
                                             envelope_sent_at=envelope_sent_at)
    if problem is not None:
        return None
    renewed.index = normalised.index
    if not message.messageId and normalised.message_id:
        # A server-made id (no messageId sent) stays the one the request already deduplicated on.
        renewed.message_id = normalised.message_id
        renewed.row = (*renewed.row[:5], normalised.message_id, *renewed.row[6:])
    return renewed
