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


def _hash_cache() -> dict[tuple[str, str], bytes | None]:
    """The per-process cache of identifier hashes (a site repeats its visitors), emptied when
    the hash key changes or the cache grows too large."""
    global _hash_key
    if _hash_key != settings.CDP_HASH_KEY or len(_hashes) > _HASH_CACHE_LIMIT:
        _hashes.clear()
        _hash_key = settings.CDP_HASH_KEY
    return _hashes


def _hash_new(cache: dict, kind: str, raw: str) -> bytes | None:
    value = normalize(kind, raw)
    cache[(kind, raw)] = digest = identity_hash(kind, value) if value else None
    return digest


def identifier_sets(valid: list[Normalised]) -> tuple[list[tuple], list[tuple]]:
    """Per message: the (kind, keyed hash) of its usable identifiers, and of those the consent
    app records preferences for (its own userId and anonymousId, listed first)."""
    cache = _hash_cache()
    sets, subjects = [], []
    for normalised in valid:
        found, own = [], []
        for position, (kind, raw) in enumerate(normalised.identifiers):
            digest = cache[(kind, raw)] if (kind, raw) in cache else _hash_new(cache, kind, raw)
            if digest is not None:
                found.append((kind, digest))
                if position < normalised.subject_ids:
                    own.append((kind, digest))
        sets.append(tuple(found))
        subjects.append(tuple(own))
    return sets, subjects


def _preferences(item: dict | None) -> dict | None:
    """`context.consent.categoryPreferences` of a message, when it is a non-empty object."""
    context = item.get("context") if item is not None else None
    consent = context.get("consent") if context.__class__ is dict else None
    preferences = consent.get("categoryPreferences") if consent.__class__ is dict else None
    return preferences if preferences.__class__ is dict and preferences else None


def _mapped(preferences: dict, keys: dict[int, str]) -> dict[str, bool] | None:
    """Purpose -> granted as the consent app reads the preferences (real booleans only)."""
    booleans = {str(k): v for k, v in preferences.items() if v is True or v is False}
    if not booleans:
        return None
    decisions, _ = reference.map_categories("segment", booleans)
    return {keys[purpose_id]: granted for purpose_id, granted in decisions.items()}


def _preference_decisions(valid: list[Normalised]) -> list[dict[str, bool] | None]:
    """Per message, the purposes its consent context decides (None without one); CMP categories
    are mapped once per distinct preference set of the batch (a site sends the same few)."""
    keys = reference.purpose_keys_by_id()
    mapped: dict[tuple, dict[str, bool] | None] = {}
    found = []
    for normalised in valid:
        preferences = _preferences(normalised.item)
        if preferences is None:
            found.append(None)
            continue
        try:
            key = tuple(preferences.items())
            decided = mapped[key] if key in mapped else mapped.setdefault(key, _mapped(preferences, keys))
        except TypeError:  # an unhashable value (a list, an object): never a decision, read slowly
            decided = _mapped(preferences, keys)
        found.append(decided)
    return found


def _preferences_change(decisions: list, subjects: list, states: dict) -> bool:
    """Whether some message states a decision one of its subjects does not hold now."""
    for decided, own_subjects in zip(decisions, subjects, strict=True):
        if not decided:
            continue
        for pair in own_subjects:
            own = states[pair].own
            for purpose, granted in decided.items():
                if own.get(purpose) is not granted:
                    return True
    return False


def _admissible(decision: SetConsent) -> str | None:
    """None when the message may be kept, else the reason it is dropped."""
    granted_at = decision.granted_at_us.get(ANALYTICS)
    suppressed_since = decision.suppressed_since_us
    if suppressed_since is not None and (granted_at is None or granted_at <= suppressed_since):
        return SUPPRESSED
    if ANALYTICS not in decision.granted:
        return NO_CONSENT
    return None


def _states(pairs: list, purposes: frozenset[str], own_purposes: set[str]) -> dict:
    found = identifiers_consent(identifiers=pairs, purposes=purposes, own_purposes=own_purposes, dated=(ANALYTICS,))
    return dict(zip(pairs, found, strict=True))


def messages_admit(valid: list[Normalised], *, path_type: str | None, source_id: int, received_at,
                   envelope_sent_at: str | None, source_key_id: int | None) -> Admitted:
    """Record consent the messages carry, then keep (minimised) the messages consent allows.
    Runs inside the ingestion transaction: a consent change and the events it admits commit together."""
    admitted = Admitted()
    if not valid:
        return admitted
    sets, subjects = identifier_sets(valid)
    decisions = _preference_decisions(valid)
    pairs = list(dict.fromkeys(pair for found in sets for pair in found))
    rule_purposes = minimisation_purposes()  # empty: no minimisation rule is active
    purposes = frozenset({ANALYTICS}) | rule_purposes
    own_purposes = {purpose for decided in decisions if decided for purpose in decided}
    states = _states(pairs, purposes, own_purposes)
    # The ledger is only touched when a preference differs from what is recorded (rare: a new
    # visitor or a changed choice); consent_from_segment_messages then compares and appends.
    if own_purposes and _preferences_change(decisions, subjects, states):
        carrying = [n.item for n, decided in zip(valid, decisions, strict=True) if decided]
        if consent_from_segment_messages(messages=carrying, source_key_id=source_key_id).recorded:
            states = _states(pairs, purposes, own_purposes)
    verdicts: dict[tuple, SetConsent] = {}  # a browser's batch repeats one visitor's identifiers
    for normalised, found in zip(valid, sets, strict=True):
        decision = verdicts.get(found)
        if decision is None:
            decision = verdicts[found] = set_consent(states[pair] for pair in found)
        reason = _admissible(decision)
        if reason is None and rule_purposes:
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
