"""Content decisions: which block (and experiment variant) fills each slot for one visitor.

    decide(source_id, visitor, slot keys) ->
        for each slot: the highest-priority active block whose audience (segments) includes the
        visitor (a block with no audience is for everyone who consented), a variant of its running
        experiment chosen by a stable hash of the visitor, else the slot's default content.

Consent, fail closed (issue 6): without **personalization** granted now — read at request time,
so a withdrawal is effective on the very next request after it commits — every slot gets its
default content, no segment is consulted, no variant is assigned and nothing is recorded.
Exposures are recorded only for a known person who consented.
"""

import hashlib
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Prefetch, Q
from django.utils import timezone

from consent.enforcement import identifier_sets_allowed
from content.models import ContentBlock, Experiment, Exposure, Slot, Variant
from segments.selectors import visitor_segments

PERSONALIZATION = "personalization"
MAX_SLOTS = 20


@dataclass
class SlotDecision:
    slot: str
    content: str = ""
    block: str | None = None
    variant: str | None = None
    experiment: str | None = None
    error: dict | None = None

    def as_json(self) -> dict:
        if self.error:
            return {"slot": self.slot, "error": self.error}
        return {"slot": self.slot, "block": self.block, "variant": self.variant, "experiment": self.experiment,
                "content": self.content}


@dataclass
class Decision:
    personalized: bool
    slots: list[SlotDecision] = field(default_factory=list)


def _variant_for(experiment: Experiment, variants: list[Variant], visitor_key: str) -> Variant | None:
    """A weighted choice that is stable per (experiment, visitor): the same person always sees
    the same variant of one experiment, independently across experiments."""
    total = sum(variant.weight for variant in variants)
    if total <= 0:
        return None
    digest = hashlib.sha256(f"{experiment.key}:{visitor_key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return None


def _candidates(slot_ids: list[int]) -> dict[int, list[ContentBlock]]:
    now = timezone.now()
    blocks = (ContentBlock.objects.filter(slot_id__in=slot_ids, is_active=True)
              .filter(Q(starts_at__isnull=True) | Q(starts_at__lte=now), Q(ends_at__isnull=True) | Q(ends_at__gt=now))
              .order_by("-priority", "key")
              .prefetch_related(Prefetch("segments", to_attr="audience"),
                                Prefetch("variants", queryset=Variant.objects.order_by("key"), to_attr="variant_list"),
                                Prefetch("experiments", queryset=Experiment.objects.filter(
                                    status=Experiment.Status.RUNNING).order_by("-started_at", "key"),
                                         to_attr="running")))
    found: dict[int, list[ContentBlock]] = {}
    for block in blocks:
        found.setdefault(block.slot_id, []).append(block)
    return found


def decide(*, source_id: int | None, visitor: tuple[str, bytes], slot_keys: list[str]) -> Decision:
    """Fill each requested slot for the visitor identified by (identity kind, keyed hash)."""
    kind, digest = visitor
    personalized = identifier_sets_allowed(identifier_sets=[[visitor]], purpose=PERSONALIZATION)[0]
    slots = {slot.key: slot for slot in Slot.objects.filter(key__in=slot_keys)}
    decision = Decision(personalized=personalized)
    profile_id, segment_ids, candidates = None, set(), {}
    if personalized:
        profile_id, segment_ids = visitor_segments(kind=kind, value_hash=digest)
        candidates = _candidates([slot.pk for slot in slots.values()])
    exposures = []
    for key in slot_keys:
        slot = slots.get(key)
        if slot is None:
            decision.slots.append(SlotDecision(slot=key, error={"code": "unknown_slot",
                                                                "message": f"No slot with the key {key!r}."}))
            continue
        chosen = SlotDecision(slot=key, content=slot.default_template)
        for block in candidates.get(slot.pk, []):
            if block.audience and not segment_ids.intersection(segment.pk for segment in block.audience):
                continue
            chosen.block, chosen.content = block.key, block.template
            experiment = block.running[0] if block.running else None
            variant = _variant_for(experiment, block.variant_list, f"{kind}:{digest.hex()}") if experiment else None
            if variant is not None:
                chosen.variant, chosen.experiment, chosen.content = variant.key, experiment.key, variant.template
            if profile_id is not None:
                exposures.append(Exposure(profile_id=profile_id, source_id=source_id, slot=slot, block=block,
                                          variant=variant, experiment=experiment if variant else None))
            break
        decision.slots.append(chosen)
    if exposures:
        with transaction.atomic():
            Exposure.objects.bulk_create(exposures)
    return decision
