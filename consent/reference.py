"""Small, rarely changing configuration read on hot paths (purposes, CMP mappings, notices),
cached in-process for CACHE_SECONDS; the services that change it clear the cache at once
(other processes see changes within CACHE_SECONDS)."""

import time
from collections import defaultdict
from dataclasses import dataclass

from consent.models import CmpCategoryMapping, Purpose

CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, object]] = {}


def cache_clear() -> None:
    _cache.clear()


def _cached(name: str, load):
    now = time.monotonic()
    hit = _cache.get(name)
    if hit and hit[0] > now:
        return hit[1]
    value = load()
    _cache[name] = (now + CACHE_SECONDS, value)
    return value


@dataclass(frozen=True)
class PurposeInfo:
    id: int
    key: str
    name: str
    is_active: bool
    withdrawn_by_gpc: bool


def purposes() -> dict[str, PurposeInfo]:
    """All purposes by key (inactive ones included: old records still name them)."""
    return _cached("purposes", lambda: {
        p.key: PurposeInfo(p.id, p.key, p.name, p.is_active, p.withdrawn_by_gpc) for p in Purpose.objects.all()})


def purpose_keys_by_id() -> dict[int, str]:
    return {info.id: key for key, info in purposes().items()}


def purpose_id(key: str) -> int:
    """The id of a purpose key; KeyError for an unknown key (callers fail closed on it)."""
    return purposes()[key].id


def cmp_mappings() -> dict[tuple[str, str], tuple[int, ...]]:
    """(cmp, category casefolded) -> purpose ids."""
    def load():
        found = defaultdict(list)
        for cmp, category, purpose_id in CmpCategoryMapping.objects.values_list("cmp", "category", "purpose_id"):
            found[(cmp, category.casefold())].append(purpose_id)
        return {key: tuple(sorted(ids)) for key, ids in found.items()}
    return _cached("mappings", load)


def map_categories(cmp: str, categories: dict[str, bool]) -> tuple[dict[int, bool], list[str]]:
    """CMP categories -> {purpose id: granted}, and the categories no mapping knows.

    A purpose several categories map to is granted only if every one of them present is granted
    (the most restrictive reading). Our own purpose keys are always understood.
    """
    mappings = cmp_mappings()
    own = purposes()
    decisions: dict[int, bool] = {}
    unmapped = []
    for category, granted in categories.items():
        targets = mappings.get((cmp, str(category).casefold()))
        if targets is None and str(category) in own:
            targets = (own[str(category)].id,)
        if not targets:
            unmapped.append(str(category))
            continue
        for target in targets:
            decisions[target] = decisions.get(target, True) and bool(granted)
    return decisions, unmapped


def tcf_decisions(decoded) -> dict[int, bool]:
    """Our purposes decided by a decoded TC string, through the `tcf` mappings (TCF purpose
    numbers). Every TCF purpose bit is present in a TC string, so each mapped purpose gets a
    decision: granted only if all TCF purposes mapped to it have consent."""
    consented = set(decoded.purposes_consent)
    categories = {category: int(category) in consented for cmp, category in cmp_mappings() if cmp == "tcf"
                  and category.isdigit()}
    return map_categories("tcf", categories)[0]
