"""Everything held on one person, found by walking the PII registry (cdp/pii.py): read it all
(access), delete it (erasure) or strip it of identity (anonymisation).

A person is found from one identifier or a profile id: their live profile, the profiles merged
into it, every identifier of those profiles (decrypted in memory only) and the keyed hashes
consent records and suppression entries are keyed on.

Registry locations are handled by shape:
- `subject` path (e.g. "profile_id", "transaction__profile_id"): rows of the person's profiles;
- `hash_columns` (kind, hash): rows keyed on the person's identifier hashes;
- neither (profiles.RejectedEvent): a handler here searches the stored payloads for the
  person's identifiers.
`keep_hashed` locations need a handler in `_KEEP_HASHED`; an unknown one stops the erasure before
anything is deleted, so a new table can never be silently skipped.
"""

import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import phonenumbers
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import Q
from psycopg import sql

from cdp import crypto, hooks
from cdp.pii import PiiLocation, registry
from consent.models import DataSubjectRequest, ErasureReceipt, SubjectLink, SuppressionEntry
from consent.services.audit import audit_record
from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
from profiles.identifiers import identity_hash, normalize
from profiles.imports import services as import_services
from profiles.models import Identity, Profile, RejectedEvent

logger = logging.getLogger(__name__)

PROFILE_MODEL = "profiles.Profile"


class PersonNotFound(ValueError):
    pass


@dataclass
class Person:
    """One data subject: profiles (live + absorbed) and identifiers (kind, value, keyed hash)."""

    profile_ids: list[uuid.UUID] = field(default_factory=list)
    identifiers: list[tuple[str, str, bytes]] = field(default_factory=list)
    # Subjects whose consent was folded into the person's profiles (consent.SubjectLink), e.g.
    # identifiers of a profile merged away.
    linked_subjects: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def hashes(self) -> list[tuple[str, bytes]]:
        pairs = {(kind, digest) for kind, _, digest in self.identifiers} | set(self.linked_subjects)
        pairs |= {(PROFILE_SUBJECT, profile_subject_hash(p)) for p in self.profile_ids}
        return sorted(pairs)

    @property
    def primary_profile_id(self) -> uuid.UUID | None:
        return self.profile_ids[0] if self.profile_ids else None


def person_find(*, kind: str, value: str) -> Person:
    """The person an identifier (or a profile id, kind "profile_id") belongs to. A person without
    a profile (consent given before any data arrived) is just that identifier."""
    if kind == PROFILE_SUBJECT:
        try:
            profile_id = uuid.UUID(str(value).strip())
        except ValueError:
            raise PersonNotFound("not a profile id") from None
        profile = Profile.objects.filter(id=profile_id).first()
        if profile is None:
            raise PersonNotFound("no such profile")
        return _person_of_profile(profile)
    normalized = normalize(kind, value)
    if not normalized:
        raise PersonNotFound(f"the {kind} given is not usable")
    digest = identity_hash(kind, normalized)
    identity = Identity.objects.filter(kind=kind, value_hash=digest).select_related("profile").first()
    if identity is None:
        return Person([], [(kind, normalized, digest)])
    return _person_of_profile(identity.profile)


def _person_of_profile(profile: Profile) -> Person:
    while profile.merged_into_id:
        profile = Profile.objects.get(id=profile.merged_into_id)
    ids, frontier = [profile.id], [profile.id]
    while frontier:  # profiles merged into it, at any depth
        frontier = list(Profile.objects.filter(merged_into_id__in=frontier).values_list("id", flat=True))
        ids.extend(frontier)
    identifiers = []
    for identity in Identity.objects.filter(profile_id__in=ids).order_by("kind", "id"):
        value = crypto.decrypt(identity.value) if identity.kind in Identity.PERSONAL_KINDS else identity.value
        identifiers.append((identity.kind, value, bytes(identity.value_hash)))
    linked = [(kind, bytes(digest)) for kind, digest in SubjectLink.objects.filter(profile_id__in=ids)
              .values_list("subject_kind", "subject_hash")]
    return Person(ids, identifiers, linked)


# -- locating the person's rows ----------------------------------------------------------------

def _model(location: PiiLocation):
    return apps.get_model(location.model)


def _rows_filter(location: PiiLocation, person: Person) -> Q | None:
    """The ORM condition selecting the person's rows of a location, or None (needs a handler)."""
    condition = Q(pk__in=[])
    matched = False
    if location.subject:
        model = _model(location)
        field_name = location.subject.split("__")[0]
        target = model._meta.get_field(field_name)
        values = [str(p) for p in person.profile_ids] if target.get_internal_type() in (
            "CharField", "TextField") else person.profile_ids
        condition |= Q(**{f"{location.subject}__in": values})
        matched = True
    if location.hash_columns:
        kind_column, hash_column = location.hash_columns
        for kind, digest in person.hashes:
            condition |= Q(**{kind_column: kind, hash_column: digest})
        matched = True
    return condition if matched else None


def _matcher(person: Person):
    """A predicate on lower-cased text: does it mention any identifier of the person (phones also
    by their national digits) or one of their profile ids? None when there is nothing to look for."""
    needles, digit_needles = set(), set()
    for kind, value, _ in person.identifiers:
        needles.add(value.lower())
        if kind == Identity.Kind.PHONE:
            try:
                national = str(phonenumbers.parse(value).national_number)
            except phonenumbers.NumberParseException:
                national = ""
            if len(national) >= 7:
                digit_needles.add(national)
    needles.update(str(profile_id) for profile_id in person.profile_ids)
    if not needles:
        return None

    def matches(text: str) -> bool:
        if any(needle in text for needle in needles):
            return True
        return bool(digit_needles) and any(d in re.sub(r"[^0-9]", "", text) for d in digit_needles)
    return matches


def _rejected_event_ids(person: Person) -> list[int]:
    """Rejected input is not linked to a profile: find payloads / raw bodies that mention the
    person. Payloads are encrypted at rest, so they are decrypted here in batches: a scan of
    profiles_rejectedevent that retention keeps small."""
    matches = _matcher(person)
    if matches is None:
        return []
    rows = RejectedEvent.objects.only("id", "payload", "raw_body").order_by("id").iterator(chunk_size=2000)
    return [row.id for row in rows if matches(f"{row.payload or ''}\n{row.raw_body or ''}".lower())]


def _import_row_error_ids(person: Person) -> list[int]:
    matches = _matcher(person)
    return import_services.import_row_errors_containing(matches=matches) if matches else []


def _import_job_ids(person: Person) -> list[int]:
    """Imports whose uploaded file (still on disk) mentions the person."""
    matches = _matcher(person)
    return import_services.import_files_containing(matches=matches) if matches else []


def _webhook_delivery_ids(person: Person) -> list[int]:
    """Segment webhook deliveries whose payload lists one of the person's profiles (payload
    {"profiles": [{"profile_id": ..., "at": ...}, ...]}); a scan kept small by the delivery log's
    own clean-up."""
    if not person.profile_ids:
        return []
    probes = [orjson.dumps([{"profile_id": str(profile_id)}]).decode() for profile_id in person.profile_ids]
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM segments_webhookdelivery WHERE payload->'profiles' @> ANY(%s::jsonb[])",
                       [probes])
        return [row[0] for row in cursor.fetchall()]


_SEARCHED = {"profiles.RejectedEvent": _rejected_event_ids, "segments.WebhookDelivery": _webhook_delivery_ids,
             "profiles.ImportRowError": _import_row_error_ids, "profiles.ImportJob": _import_job_ids}


def person_rows(location: PiiLocation, person: Person):
    """A queryset of the person's rows in one registered location."""
    model = _model(location)
    if location.model in _SEARCHED:
        return model.objects.filter(pk__in=_SEARCHED[location.model](person))
    condition = _rows_filter(location, person)
    if condition is None:
        raise ImproperlyConfigured(f"{location.model}: no subject path, hash columns or search handler")
    return model.objects.filter(condition)


# -- erasure ----------------------------------------------------------------------------------

def _audit_pseudonymise(person: Person, queryset) -> int:
    """Audit entries stay (they are the record of what staff did) with the profile id replaced
    by a keyed hash."""
    changed = 0
    for profile_id in person.profile_ids:
        changed += queryset.filter(object_id=str(profile_id)).update(
            object_id="erased:" + crypto.keyed_hash_hex("audit_object", str(profile_id))[:32])
    return changed


def _requests_pseudonymise(person: Person, queryset) -> int:
    from consent.services.requests import request_file_delete

    changed = 0
    for request in queryset:
        request_file_delete(request)
        changed += DataSubjectRequest.objects.filter(pk=request.pk).update(
            subject_value=None, note=None, profile_id=None, result_file="", result_size=None, result_sha256="")
    return changed


def _keep(person: Person, queryset) -> int:
    return 0


def _webhook_deliveries_strip(person: Person, queryset) -> int:
    """Remove the person's entries from delivery payloads (the rows still serve the other people
    in them); a delivery left with nobody is deleted, so nothing about the person is sent later."""
    ids = list(queryset.values_list("id", flat=True))
    if not ids:
        return 0
    people = [str(profile_id) for profile_id in person.profile_ids]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE segments_webhookdelivery d SET payload = jsonb_set(d.payload, '{profiles}', kept.list), "
            "profile_count = kept.n FROM (SELECT id, coalesce(jsonb_agg(e) FILTER (WHERE NOT "
            "(e->>'profile_id' = ANY(%(people)s))), '[]'::jsonb) AS list, count(e) FILTER (WHERE NOT "
            "(e->>'profile_id' = ANY(%(people)s))) AS n FROM segments_webhookdelivery, "
            "jsonb_array_elements(payload->'profiles') e WHERE id = ANY(%(ids)s) GROUP BY id) kept "
            "WHERE d.id = kept.id", {"people": people, "ids": ids})
        changed = cursor.rowcount
        cursor.execute("DELETE FROM segments_webhookdelivery WHERE id = ANY(%s) AND profile_count = 0", [ids])
    return changed


def _import_files_remove(person: Person, queryset) -> int:
    """The upload goes (it also holds other people's rows, but it is only a transient copy of what
    was loaded); the job's history row, with counts only, stays."""
    return import_services.import_files_remove(job_ids=list(queryset.values_list("id", flat=True)),
                                               reason="erasure")


_KEEP_HASHED = {
    "profiles.ImportJob": _import_files_remove,
    "segments.WebhookDelivery": _webhook_deliveries_strip,
    "consent.AuditEntry": _audit_pseudonymise,
    "consent.DataSubjectRequest": _requests_pseudonymise,
    "consent.ConsentRecord": _keep,  # keyed hashes only, append-only evidence
    "consent.SuppressionEntry": _keep,  # the entries erasure itself adds
}


@dataclass
class ErasureResult:
    receipt: ErasureReceipt
    counts: dict


def _plan(locations: list[PiiLocation]) -> list[PiiLocation]:
    """Checked before anything is touched: every location can be handled."""
    for location in locations:
        if location.on_erasure == "keep_hashed" and location.model not in _KEEP_HASHED:
            raise ImproperlyConfigured(f"{location.model} is keep_hashed but consent has no handler for it")
        if location.on_erasure == "delete" and not (location.subject or location.hash_columns
                                                    or location.model in _SEARCHED):
            raise ImproperlyConfigured(f"{location.model}: no way to find a person's rows")
    # The profile row goes last: everything else points at it.
    return sorted(locations, key=lambda loc: loc.model == PROFILE_MODEL)


def _count(counts: dict, label: str, key: str, amount: int) -> None:
    if amount:
        counts.setdefault(label, {}).setdefault(key, 0)
        counts[label][key] += amount


def _suppress(person: Person, request, now) -> int:
    pairs = person.hashes
    for kind, digest in pairs:
        SuppressionEntry.objects.update_or_create(
            kind=kind, value_hash=digest,
            defaults={"reason": "erasure", "request": request, "created_at": now, "lifted_at": None,
                      "lifted_by_record": None})
    return len(pairs)


def _receipt(kind, person, counts, *, actor, request, retention_rule, suppressed, now) -> ErasureReceipt:
    return ErasureReceipt.objects.create(
        kind=kind, request=request, retention_rule=retention_rule, performed_at=now,
        performed_by=actor if getattr(actor, "is_authenticated", False) else None,
        profiles=len(person.profile_ids), counts=counts, suppressed_identifiers=suppressed)


@transaction.atomic
def person_erase(*, person: Person, actor=None, request=None, retention_rule=None,
                 suppress: bool = True) -> ErasureResult:
    """Delete the person from every registered location (keeping the ledger, audit entries and
    requests with keyed hashes only), add suppression entries, and write a receipt."""
    now = datetime.now(UTC)
    counts: dict = {}
    for location in _plan(registry().locations):
        if location.on_erasure == "cascade":
            continue  # deleted with its parent; Django's delete() reports it under its own label
        rows = person_rows(location, person)
        if location.on_erasure == "keep_hashed":
            _count(counts, location.model, "changed", _KEEP_HASHED[location.model](person, rows))
            continue
        _, deleted = rows.delete()
        for label, amount in deleted.items():
            _count(counts, label, "deleted", amount)
    suppressed = _suppress(person, request, now) if suppress else 0
    receipt = _receipt(ErasureReceipt.Kind.ERASURE, person, counts, actor=actor, request=request,
                       retention_rule=retention_rule, suppressed=suppressed, now=now)
    hooks.profiles_changed(profile_ids=person.profile_ids)
    audit_record(actor=actor, action="person.erased", object_type="receipt", object_id=receipt.pk,
                 details={"profiles": len(person.profile_ids), "tables": len(counts), "suppressed": suppressed})
    logger.info("person erased", extra={"receipt_id": receipt.pk, "tables": len(counts)})
    return ErasureResult(receipt, counts)


# -- anonymisation ------------------------------------------------------------------------------

# Keys removed from event JSON on anonymisation (top level of properties / context).
PERSONAL_KEYS = ["email", "phone", "name", "first_name", "last_name", "firstName", "lastName", "address",
                 "ip", "userAgent", "traits", "username", "birthday", "user_id", "userId"]
_ANONYMISE_EVENTS = """
UPDATE profiles_event SET profile_id = %(new)s, anonymous_id = '', user_id = '', previous_id = '',
       traits = '{}'::jsonb, properties = properties - %(keys)s::text[],
       context = (context - %(keys)s::text[]) #- '{location,city}' #- '{location,latitude}' #- '{location,longitude}'
WHERE profile_id = ANY(%(old)s::uuid[])
"""  # index profiles_event_profile_name_ts (profile_id, ...)
_ANONYMOUS_PROFILE_FIELDS = ("created_at", "updated_at", "first_seen_at", "last_seen_at", "gender", "country",
                             "income_band", "language", "occupation", "last_device_type", "last_os", "last_browser")


def _anonymous_profile(cursor, old: uuid.UUID) -> uuid.UUID:
    """A new profile row (new random id) with only the coarse, non-identifying fields kept."""
    new = uuid.uuid4()
    columns = sql.SQL(", ").join(map(sql.Identifier, _ANONYMOUS_PROFILE_FIELDS))
    cursor.execute(sql.SQL("INSERT INTO profiles_profile (id, {columns}, postcode, city, traits) "
                           "SELECT %s, {columns}, '', '', '{{}}'::jsonb FROM profiles_profile WHERE id = %s").format(
        columns=columns), [new, old])
    return new


@transaction.atomic
def person_anonymise(*, person: Person, actor=None, request=None, retention_rule=None,
                     suppress: bool = False) -> ErasureResult:
    """Keep the behaviour (events, transactions, computed traits) under a new random profile id
    with no identifiers and no personal fields; delete everything else that names the person.
    The old profile id stops existing, so nothing links the kept rows to the person."""
    now = datetime.now(UTC)
    counts: dict = {}
    primary = person.primary_profile_id
    if primary is not None:
        with connection.cursor() as cursor:
            new = _anonymous_profile(cursor, primary)
            old = [str(p) for p in person.profile_ids]
            cursor.execute(_ANONYMISE_EVENTS, {"new": new, "old": old, "keys": PERSONAL_KEYS})
            _count(counts, "profiles.Event", "changed", cursor.rowcount)
            cursor.execute("UPDATE profiles_transaction SET profile_id = %s, order_id = 'anon-' || md5(%s || id::text) "
                           "WHERE profile_id = ANY(%s::uuid[])", [new, secrets.token_hex(16), old])
            _count(counts, "profiles.Transaction", "changed", cursor.rowcount)
            cursor.execute("UPDATE profiles_computedtraits SET profile_id = %s WHERE profile_id = %s", [new, primary])
            _count(counts, "profiles.ComputedTraits", "changed", cursor.rowcount)
            _count(counts, "profiles.Profile", "changed", 1)
    # Everything else about the person goes, as in an erasure, except the rows just re-pointed.
    kept = {"profiles.Event", "profiles.Transaction", "profiles.TransactionItem", "profiles.ComputedTraits"}
    for location in _plan(registry().locations):
        if location.model in kept or location.on_erasure == "cascade":
            continue
        rows = person_rows(location, person)
        if location.on_erasure == "keep_hashed":
            _count(counts, location.model, "changed", _KEEP_HASHED[location.model](person, rows))
            continue
        _, deleted = rows.delete()
        for label, amount in deleted.items():
            if label != PROFILE_MODEL:  # the profile lives on as the anonymous one (counted changed)
                _count(counts, label, "deleted", amount)
    suppressed = _suppress(person, request, now) if suppress else 0
    receipt = _receipt(ErasureReceipt.Kind.ANONYMISATION, person, counts, actor=actor, request=request,
                       retention_rule=retention_rule, suppressed=suppressed, now=now)
    hooks.profiles_changed(profile_ids=person.profile_ids)
    audit_record(actor=actor, action="person.anonymised", object_type="receipt", object_id=receipt.pk,
                 details={"profiles": len(person.profile_ids), "tables": len(counts)})
    logger.info("person anonymised", extra={"receipt_id": receipt.pk, "tables": len(counts)})
    return ErasureResult(receipt, counts)
