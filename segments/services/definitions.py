"""Creating, editing, archiving and sharing segments."""

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from profiles.models import Source
from segments.errors import SegmentError
from segments.evaluation import DefinitionError, validate
from segments.evaluation.definition import Analysis, walk
from segments.models import Segment
from segments.purposes import purpose_choices, purposes_check

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{1,79}$")
# Words the API and screens use in segment URLs next to keys.
RESERVED_KEYS = {"templates", "preview", "catalog", "new", "bulk"}
MIN_SCHEDULE_MINUTES = 5
MAX_SCHEDULE_MINUTES = 7 * 1440
SHARE_PERMISSIONS = {"view": "view_segment", "change": "change_segment"}


@dataclass
class CheckedDefinition:
    analysis: Analysis
    segment_ids: dict[str, int]  # keys of segments the definition uses -> ids


def definition_check(definition, *, segment: Segment | None = None) -> CheckedDefinition:
    """Validate a definition against the allow-lists and the existing segments (unknown keys,
    cycles through segment conditions); raise SegmentError(invalid_definition) listing problems."""
    try:
        analysis = validate(definition)
    except DefinitionError as exc:
        raise SegmentError("invalid_definition", str(exc), field="definition", errors=exc.errors) from None
    found = dict(Segment.objects.filter(key__in=analysis.segment_keys, is_active=True).values_list("key", "id"))
    errors = [{"path": "root", "message": f"unknown or archived segment {key!r}"}
              for key in sorted(analysis.segment_keys - set(found))]
    if segment is not None and segment.key in analysis.segment_keys:
        errors.append({"path": "root", "message": "a segment cannot refer to itself"})
    elif segment is not None and segment.pk and _reaches(set(found.values()), segment.pk):
        errors.append({"path": "root", "message": "this creates a cycle: a segment used here depends on this one"})
    errors += _unknown_purposes(analysis.purposes)
    if errors:
        raise SegmentError("invalid_definition", f"{errors[0]['path']}: {errors[0]['message']}", field="definition",
                           errors=errors)
    return CheckedDefinition(analysis, found)


def _unknown_purposes(purposes: set[str]) -> list[dict]:
    known = {item["value"] for item in purpose_choices()}
    return [{"path": "root", "message": f"unknown or inactive consent purpose {key!r}; known purposes: "
                                        f"{', '.join(sorted(known))}"} for key in sorted(purposes - known)]


def _reaches(start_ids: set[int], target_id: int) -> bool:
    """Whether `target_id` is reachable from `start_ids` along segment dependencies."""
    seen, frontier = set(), set(start_ids)
    while frontier:
        if target_id in frontier:
            return True
        seen |= frontier
        rows = Segment.objects.filter(id__in=frontier).values_list("depends_on", flat=True)
        frontier = {dep for deps in rows for dep in deps} - seen
    return False


def _apply_analysis(segment: Segment, checked: CheckedDefinition) -> None:
    analysis = checked.analysis
    events = set(analysis.event_names)
    traits = set(analysis.trait_names)
    if analysis.uses_consent:
        traits.add("consent")  # cdp.hooks.consent_changed announces consent changes as this name
    if analysis.uses_transactions:
        # Orders arrive as order_completed events (web, app) or transaction rows (imports).
        events.add("order_completed")
        traits.add("transactions")
    segment.event_names = sorted(events)
    segment.trait_names = sorted(traits)
    segment.depends_on = sorted(checked.segment_ids.values())
    segment.any_event = analysis.any_event
    segment.is_time_based = analysis.is_time_based


def _check_key(key) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise SegmentError("invalid_key", "The key must be 2-80 characters: lower-case letters, digits and _, "
                                          "starting with a letter (e.g. high_intent_cart_abandoners).", field="key")
    if key in RESERVED_KEYS:
        raise SegmentError("invalid_key", f"{key!r} is reserved; choose another key.", field="key")
    if Segment.objects.filter(key=key).exists():
        raise SegmentError("duplicate_key", f"A segment with the key {key!r} already exists.", field="key")
    return key


def _check_schedule(minutes) -> int | None:
    if minutes in (None, "", 0):
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not (
            MIN_SCHEDULE_MINUTES <= minutes <= MAX_SCHEDULE_MINUTES):
        raise SegmentError("invalid_schedule", f"The schedule is a number of minutes between {MIN_SCHEDULE_MINUTES} "
                                               f"and {MAX_SCHEDULE_MINUTES} (60 = hourly, 1440 = daily), or empty "
                                               "for manual.", field="schedule_minutes")
    return minutes


def _check_sources(source_ids) -> list[Source]:
    ids = list(source_ids or [])
    if any(isinstance(item, bool) or not isinstance(item, int) for item in ids):
        raise SegmentError("invalid_sources", "exposed_sources must be a list of source ids.", field="exposed_sources")
    sources = list(Source.objects.filter(id__in=ids))
    if len(sources) != len(set(ids)):
        raise SegmentError("invalid_sources", "Some exposed sources do not exist.", field="exposed_sources")
    return sources


def _check_webhook(url: str) -> str:
    from segments.services.webhooks import WebhookRefused, webhook_url_check

    url = (url or "").strip()
    if not url:
        return ""
    try:
        webhook_url_check(url)
    except WebhookRefused as exc:
        raise SegmentError("webhook_refused", str(exc), field="webhook_url") from None
    return url


@transaction.atomic
def segment_create(*, actor, key: str, name: str, description: str = "", kind: str = Segment.Kind.RULES,
                   definition: dict | None = None, schedule_minutes: int | None = None, is_realtime: bool = True,
                   exposed_source_ids=(), webhook_url: str = "", webhook_on_enter: bool = True,
                   webhook_on_exit: bool = True, required_purposes=()) -> Segment:
    """Create a segment and queue its first recompute (rules) after commit."""
    if kind not in Segment.Kind.values:
        raise SegmentError("invalid_kind", "kind must be rules or static.", field="kind")
    segment = Segment(key=_check_key(key), name=_check_name(name), description=description or "", kind=kind,
                      owner=actor if getattr(actor, "is_authenticated", False) else None,
                      schedule_minutes=_check_schedule(schedule_minutes) if kind == Segment.Kind.RULES else None,
                      is_realtime=bool(is_realtime) and kind == Segment.Kind.RULES,
                      webhook_on_enter=webhook_on_enter, webhook_on_exit=webhook_on_exit,
                      required_purposes=purposes_check(list(required_purposes)))
    if kind == Segment.Kind.RULES:
        segment.definition = definition
        _apply_analysis(segment, definition_check(definition))
    else:
        segment.definition = {}
        segment.status = Segment.Status.OK
    segment.webhook_url = _check_webhook(webhook_url)
    segment.webhook_secret = secrets.token_urlsafe(32) if segment.webhook_url else ""
    if segment.schedule_minutes:
        segment.next_run_at = timezone.now() + timedelta(minutes=segment.schedule_minutes)
    sources = _check_sources(exposed_source_ids)
    segment.save()
    segment.exposed_sources.set(sources)
    if kind == Segment.Kind.RULES:
        from segments.services.recompute import segment_recompute_request

        segment_recompute_request(segment=segment, trigger="created", actor=actor)
    return segment


def _check_name(name) -> str:
    name = (name or "").strip() if isinstance(name, str) else ""
    if not name or len(name) > 200:
        raise SegmentError("invalid_name", "Give the segment a name (up to 200 characters).", field="name")
    return name


@transaction.atomic
def segment_update(*, segment: Segment, actor, **changes) -> Segment:
    """Change a segment; a new definition gets a new definition version and a recompute.
    The key is stable (client sites use it) and cannot change."""
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    if "key" in changes and changes["key"] != segment.key:
        raise SegmentError("key_immutable", "The key of a segment cannot change: client sites use it. "
                                            "Create a new segment instead.", field="key")
    definition_changed = False
    if "definition" in changes and segment.kind == Segment.Kind.RULES and changes["definition"] != segment.definition:
        checked = definition_check(changes["definition"], segment=segment)
        segment.definition = changes["definition"]
        segment.definition_version += 1
        _apply_analysis(segment, checked)
        definition_changed = True
    if "name" in changes:
        segment.name = _check_name(changes["name"])
    if "description" in changes:
        segment.description = changes["description"] or ""
    if "schedule_minutes" in changes and segment.kind == Segment.Kind.RULES:
        segment.schedule_minutes = _check_schedule(changes["schedule_minutes"])
        segment.next_run_at = (timezone.now() + timedelta(minutes=segment.schedule_minutes)
                               if segment.schedule_minutes else None)
    if "is_realtime" in changes:
        segment.is_realtime = bool(changes["is_realtime"]) and segment.kind == Segment.Kind.RULES
    for flag in ("webhook_on_enter", "webhook_on_exit"):
        if flag in changes:
            setattr(segment, flag, bool(changes[flag]))
    purposes_changed = False
    if "required_purposes" in changes:
        purposes = purposes_check(changes["required_purposes"])
        purposes_changed = purposes != segment.required_purposes
        segment.required_purposes = purposes
    if "webhook_url" in changes:
        url = _check_webhook(changes["webhook_url"])
        if url and not segment.webhook_secret:
            segment.webhook_secret = secrets.token_urlsafe(32)
        segment.webhook_url = url
    segment.save()
    if "exposed_source_ids" in changes or purposes_changed:
        if "exposed_source_ids" in changes:
            segment.exposed_sources.set(_check_sources(changes["exposed_source_ids"]))
        from segments.lookup import lookup_cache_bump

        transaction.on_commit(lambda: lookup_cache_bump(source_ids=None))
    if definition_changed:
        from segments.services.recompute import segment_recompute_request

        segment_recompute_request(segment=segment, trigger="definition", actor=actor)
    return segment


@transaction.atomic
def segment_archive(*, segment: Segment, actor) -> Segment:
    """Archive (soft delete): the segment stops computing and disappears from lookups; restorable."""
    used_by = list(Segment.objects.filter(is_active=True, depends_on__contains=[segment.pk]).values_list("key", flat=True))
    if used_by:
        raise SegmentError("segment_in_use", f"Segments {', '.join(used_by)} use this segment; change them first.",
                           status=409)
    Segment.objects.filter(pk=segment.pk).update(is_active=False, next_run_at=None, updated_at=timezone.now())
    from segments.lookup import lookup_cache_bump

    transaction.on_commit(lambda: lookup_cache_bump(source_ids=None))
    segment.refresh_from_db()
    return segment


@transaction.atomic
def segment_restore(*, segment: Segment, actor) -> Segment:
    """Undo an archive and recompute (the data moved on while it was archived)."""
    Segment.objects.filter(pk=segment.pk).update(is_active=True, updated_at=timezone.now())
    segment.refresh_from_db()
    if segment.schedule_minutes:
        Segment.objects.filter(pk=segment.pk).update(next_run_at=timezone.now())
    if segment.kind == Segment.Kind.RULES:
        from segments.services.recompute import segment_recompute_request

        segment_recompute_request(segment=segment, trigger="restored", actor=actor)
    from segments.lookup import lookup_cache_bump

    transaction.on_commit(lambda: lookup_cache_bump(source_ids=None))
    return segment


@transaction.atomic
def segment_share(*, segment: Segment, actor, permission: str, user: User | None = None,
                  group: Group | None = None, grant: bool = True) -> None:
    """Grant (or revoke) view or change on one segment to a user or a group (guardian)."""
    from guardian.shortcuts import assign_perm, remove_perm

    from cdp.roles import ROLES

    if permission not in SHARE_PERMISSIONS:
        raise SegmentError("invalid_permission", "permission must be view or change.", field="permission")
    if (user is None) == (group is None):
        raise SegmentError("invalid_grantee", "Share with exactly one user or one group.")
    if user is not None and not (user.is_superuser or user.groups.filter(name__in=ROLES).exists()):
        raise SegmentError("invalid_grantee", "Segments can only be shared with staff who have a role.", field="user")
    if user is not None and user.pk == segment.owner_id:
        raise SegmentError("invalid_grantee", "The owner already has every permission.", field="user")
    target = user or group
    codename = SHARE_PERMISSIONS[permission]
    if grant:
        assign_perm(f"segments.{codename}", target, segment)
    else:
        remove_perm(f"segments.{codename}", target, segment)


def definition_segment_keys(definition: dict) -> set[str]:
    return {node["segment"] for node in walk(definition.get("root", {})) if node.get("type") == "segment"}
