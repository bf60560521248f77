"""Read queries of the consent app (screens, staff API, exports)."""

import contextlib
import uuid
from datetime import datetime, time

from django.db.models import Count, Q, QuerySet
from django.utils.dateparse import parse_date

from consent import reference
from consent.models import AuditEntry, ConsentRecord, DataSubjectRequest, ProfileConsent, SubjectLink
from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
from profiles.identifiers import identity_hash, normalize, search_candidates
from profiles.models import Identity, Profile


def subjects_for_query(query: str, kind: str = "") -> list[tuple[str, bytes]]:
    """(kind, keyed hash) subjects a search means: the identifier itself and, when it belongs to
    a profile, every subject of that profile (its identifiers, its profile-id subject, links)."""
    query = query.strip()
    if not query:
        return []
    if kind and kind != PROFILE_SUBJECT:
        normalized = normalize(kind, query)
        candidates = [(kind, identity_hash(kind, normalized))] if normalized else []
    else:
        candidates = [] if kind else search_candidates(query)
    profile_ids = set()
    with contextlib.suppress(ValueError):
        profile_ids.add(uuid.UUID(query))
    if candidates:
        condition = Q()
        for candidate_kind, digest in candidates:
            condition |= Q(kind=candidate_kind, value_hash=digest)
        profile_ids.update(Identity.objects.filter(condition).values_list("profile_id", flat=True))
        links = Q()
        for candidate_kind, digest in candidates:
            links |= Q(subject_kind=candidate_kind, subject_hash=digest)
        profile_ids.update(SubjectLink.objects.filter(links).values_list("profile_id", flat=True))
    subjects = set(candidates)
    if profile_ids:
        live = set(Profile.objects.filter(Q(id__in=profile_ids) | Q(merged_into_id__in=profile_ids))
                   .values_list("id", flat=True))
        subjects |= {(PROFILE_SUBJECT, profile_subject_hash(p)) for p in live}
        subjects |= {(k, bytes(h)) for k, h in Identity.objects.filter(profile_id__in=live)
                     .values_list("kind", "value_hash")}
        subjects |= {(k, bytes(h)) for k, h in SubjectLink.objects.filter(profile_id__in=live)
                     .values_list("subject_kind", "subject_hash")}
    return sorted(subjects)


def _day(value: str, *, end: bool = False):
    day = parse_date(value or "") if value else None
    if day is None:
        return None
    return datetime.combine(day, time.max if end else time.min).astimezone()


def ledger_queryset(*, query: str = "", kind: str = "", purpose: str = "", granted: str = "", source: str = "",
                    date_from: str = "", date_to: str = "") -> QuerySet:
    """Ledger records, newest first, filtered. A person filter with no match yields nothing."""
    records = ConsentRecord.objects.select_related("purpose", "notice").order_by("-sequence")
    if query.strip():
        subjects = subjects_for_query(query, kind)
        condition = Q(pk__in=[])
        for subject_kind, digest in subjects:
            condition |= Q(subject_kind=subject_kind, subject_hash=digest)  # consent_record_subject_idx
        records = records.filter(condition)
    if purpose:
        records = records.filter(purpose__key=purpose)
    if granted in ("yes", "no"):
        records = records.filter(granted=granted == "yes")
    if source:
        records = records.filter(source=source)
    if start := _day(date_from):
        records = records.filter(captured_at__gte=start)
    if end := _day(date_to, end=True):
        records = records.filter(captured_at__lte=end)
    return records


def profile_consent_states(*, profile_id) -> list[dict]:
    """Every active purpose with the profile's current state (None = never decided)."""
    rows = {row.purpose_id: row for row in ProfileConsent.objects.filter(profile_id=profile_id)}
    states = []
    for key, info in reference.purposes().items():
        if not info.is_active:
            continue
        row = rows.get(info.id)
        states.append({"purpose": key, "name": info.name, "granted": bool(row and row.granted),
                       "decided": row is not None, "decided_at": row.decided_at if row else None,
                       "conflict": bool(row and row.conflict), "record": row.record_id if row else None})
    return states


def consent_overview() -> list[dict]:
    """Per purpose: profiles granted / withdrawn now, and conflicts (the consent home screen)."""
    counts = {(row["purpose_id"], row["granted"]): row for row in
              ProfileConsent.objects.values("purpose_id", "granted").annotate(n=Count("id"),
                                                                              conflicts=Count("id", filter=Q(
                                                                                  conflict=True))).order_by()}
    overview = []
    for key, info in reference.purposes().items():
        granted = counts.get((info.id, True), {})
        withdrawn = counts.get((info.id, False), {})
        overview.append({"key": key, "name": info.name, "granted": granted.get("n", 0),
                         "withdrawn": withdrawn.get("n", 0), "conflicts": withdrawn.get("conflicts", 0)})
    return overview


def request_queryset(*, status: str = "", type: str = "", open_only: bool = False) -> QuerySet:
    requests = DataSubjectRequest.objects.select_related("handler").order_by("due_at", "id")
    if status:
        requests = requests.filter(status=status)
    if type:
        requests = requests.filter(type=type)
    if open_only:
        requests = requests.filter(status__in=[DataSubjectRequest.Status.RECEIVED,
                                               DataSubjectRequest.Status.IN_PROGRESS])
    return requests


def audit_queryset(*, actor: str = "", action: str = "", object_type: str = "", object_id: str = "",
                   date_from: str = "", date_to: str = "") -> QuerySet:
    entries = AuditEntry.objects.select_related("actor", "actor_key").order_by("-at", "-id")
    if actor:
        entries = entries.filter(actor__username=actor)
    if action:
        entries = entries.filter(action__startswith=action)
    if object_type:
        entries = entries.filter(object_type=object_type)
    if object_id:
        entries = entries.filter(object_id=object_id.strip())  # audit_object_idx
    if start := _day(date_from):
        entries = entries.filter(at__gte=start)
    if end := _day(date_to, end=True):
        entries = entries.filter(at__lte=end)
    return entries


def audit_actions() -> list[str]:
    return list(AuditEntry.objects.order_by().values_list("action", flat=True).distinct()[:200])
