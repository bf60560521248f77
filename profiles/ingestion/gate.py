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

from consent import reference
from consent.enforcement import (
    SetConsent,
    identifiers_consent,
    message_minimise,
    minimisation_purposes,
    set_consent,
)
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


def _preferences(item: dict | None) -> tuple[tuple[str, bool], ...]:
    """`context.consent.categoryPreferences` as the consent app reads it (real booleans only)."""
    context = item.get("context") if item is not None else None
    consent = context.get("consent") if isinstance(context, dict) else None
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(preferences, dict):
        return ()
    return tuple((str(k), v) for k, v in preferences.items() if isinstance(v, bool))


def _subjects(item: dict) -> list[tuple[str, bytes]]:
    """The subjects the consent app records preferences for: the message's userId, anonymousId."""
    found = []
    for kind, key in (("user_id", "userId"), ("anonymous_id", "anonymousId")):
        value = item.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            digest = _hashed(kind, str(value))
            if digest is not None:
                found.append((kind, digest))
    return found


def _admissible(decision: SetConsent) -> str | None:
    """None when the message may be kept, else the reason it is dropped."""
    granted_at = decision.granted_at.get(ANALYTICS)
    if decision.suppressed_since is not None and (granted_at is None or granted_at <= decision.suppressed_since):
        return SUPPRESSED
    if ANALYTICS not in decision.granted:
        return NO_CONSENT
    return None


class _Preferences:
    """The batch's consent contexts mapped to purposes once per distinct preference set."""

    def __init__(self, valid: list[Normalised]):
        keys = reference.purpose_keys_by_id()
        self.mapped: dict[tuple, dict[str, bool]] = {}
        self.carrying: list[tuple[Normalised, dict[str, bool]]] = []
        for normalised in valid:
            preferences = _preferences(normalised.item)
            if not preferences:
                continue
            if preferences not in self.mapped:
                decisions, _ = reference.map_categories("segment", dict(preferences))
                self.mapped[preferences] = {keys[purpose_id]: granted for purpose_id, granted in decisions.items()}
            self.carrying.append((normalised, self.mapped[preferences]))

    def purposes(self) -> set[str]:
        return {purpose for decisions in self.mapped.values() for purpose in decisions}

    def change_anything(self, states: dict) -> bool:
        """Whether some message states a decision its subject does not hold now."""
        for normalised, decisions in self.carrying:
            for pair in _subjects(normalised.item):
                own = states[pair].own if pair in states else {}
                if any(own.get(purpose) is not granted for purpose, granted in decisions.items()):
                    return True
        return False


def _states(pairs: list, purposes: set[str]) -> dict:
    found = identifiers_consent(identifiers=pairs, purposes=purposes, dated=(ANALYTICS,))
    return dict(zip(pairs, found, strict=True))


def messages_admit(valid: list[Normalised], *, path_type: str | None, source_id: int, received_at,
                   envelope_sent_at: str | None, source_key_id: int | None) -> Admitted:
    """Record consent the messages carry, then keep (minimised) the messages consent allows.
    Runs inside the ingestion transaction: a consent change and the events it admits commit together."""
    admitted = Admitted()
    if not valid:
        return admitted
    sets = [identifier_set(n) for n in valid]
    preferences = _Preferences(valid)
    subjects = [pair for normalised, _ in preferences.carrying for pair in _subjects(normalised.item)]
    pairs = list(dict.fromkeys([pair for found in sets for pair in found] + subjects))
    purposes = {ANALYTICS} | set(minimisation_purposes()) | preferences.purposes()
    states = _states(pairs, purposes)
    # The ledger is only touched when a preference differs from what is recorded (rare: a new
    # visitor or a changed choice); consent_from_segment_messages then compares and appends.
    if preferences.carrying and preferences.change_anything(states):
        recorded = consent_from_segment_messages(messages=[n.item for n, _ in preferences.carrying],
                                                 source_key_id=source_key_id)
        if recorded.recorded:
            states = _states(pairs, purposes)
    for normalised, found in zip(valid, sets, strict=True):
        decision = set_consent(states[pair] for pair in found)
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
