"""Data-subject requests: the queue's workflow, the access export, erasure, anonymisation,
rectification. Every step is audited (ids and counts only).

Access exports are zips (one JSON and one CSV per registered table, plus the consent history)
sealed with the personal-data key (cdp.crypto.encrypt_bytes) in the default storage under
`dsr/`, and deleted after CDP_DSR_FILE_DAYS.
"""

import hashlib
import io
import logging
import secrets
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from cdp import crypto
from cdp.csvexport import csv_text
from cdp.pii import registry
from consent import reference
from consent.models import DataSubjectRequest, NoticeVersion
from consent.services import person as persons
from consent.services.audit import audit_record
from consent.services.inputs import ConsentInputError, subject_from_identifier
from consent.services.state import PROFILE_SUBJECT, profile_subject_hash

logger = logging.getLogger(__name__)

RESULT_FOLDER = "dsr"
RECTIFIABLE_FIELDS = ("first_name", "last_name", "birth_year", "gender", "country", "city", "postcode",
                      "language", "occupation", "income_band")


class RequestError(ValueError):
    """A workflow step that is not possible now (message safe to show)."""


# -- the queue ----------------------------------------------------------------------------------

@transaction.atomic
def dsr_create(*, type: str, identifier_kind: str, identifier: str, actor, note: str = "",
               received_at: datetime | None = None) -> DataSubjectRequest:
    """Register a request; the person is looked up now (a profile may not exist)."""
    if type not in DataSubjectRequest.Type.values:
        raise ConsentInputError("invalid_type", "unknown request type")
    if identifier_kind == PROFILE_SUBJECT:
        try:
            profile_id = uuid.UUID(str(identifier).strip())
        except ValueError:
            raise ConsentInputError("invalid_identifier", "not a profile id", "identifier") from None
        subject_hash, value = profile_subject_hash(profile_id), str(profile_id)
    else:
        subject = subject_from_identifier(identifier_kind, identifier)
        subject_hash, value = subject.hash, str(identifier).strip()
    try:
        person = persons.person_find(kind=identifier_kind, value=value)
    except persons.PersonNotFound:
        raise ConsentInputError("unknown_profile", "no profile has that id", "identifier") from None
    received = received_at or timezone.now()
    request = DataSubjectRequest.objects.create(
        type=type, subject_kind=identifier_kind, subject_hash=subject_hash, subject_value=value,
        profile_id=person.primary_profile_id, received_at=received,
        due_at=received + timedelta(days=settings.CDP_DSR_DUE_DAYS), created_by=actor, note=note or None)
    audit_record(actor=actor, action="dsr.created", object_type="dsr", object_id=request.pk,
                 details={"type": type, "profile_found": person.primary_profile_id is not None})
    return request


def _claim(request: DataSubjectRequest, actor, *, progress: str = "") -> None:
    """Move an open request to in progress with this handler (a conditional UPDATE, so two
    officers clicking at once do not both start it)."""
    updated = DataSubjectRequest.objects.filter(
        pk=request.pk, status__in=[DataSubjectRequest.Status.RECEIVED, DataSubjectRequest.Status.IN_PROGRESS],
    ).update(status=DataSubjectRequest.Status.IN_PROGRESS, handler=actor, progress=progress)
    if not updated:
        raise RequestError("this request is already closed")
    request.refresh_from_db()


@transaction.atomic
def dsr_assign(*, request: DataSubjectRequest, actor) -> DataSubjectRequest:
    _claim(request, actor, progress=request.progress)
    audit_record(actor=actor, action="dsr.assigned", object_type="dsr", object_id=request.pk)
    return request


@transaction.atomic
def dsr_reject(*, request: DataSubjectRequest, actor, reason: str) -> DataSubjectRequest:
    if not reason.strip():
        raise RequestError("give a reason for rejecting the request")
    _claim(request, actor)
    DataSubjectRequest.objects.filter(pk=request.pk).update(
        status=DataSubjectRequest.Status.REJECTED, outcome=reason.strip()[:300], completed_at=timezone.now(),
        progress="")
    audit_record(actor=actor, action="dsr.rejected", object_type="dsr", object_id=request.pk)
    request.refresh_from_db()
    return request


def _complete(request: DataSubjectRequest, outcome: str, **fields) -> None:
    DataSubjectRequest.objects.filter(pk=request.pk).update(
        status=DataSubjectRequest.Status.COMPLETED, completed_at=timezone.now(), outcome=outcome[:300], progress="",
        **fields)
    request.refresh_from_db()


def _person_of(request: DataSubjectRequest) -> persons.Person:
    if request.profile_id:
        try:
            return persons.person_find(kind=PROFILE_SUBJECT, value=str(request.profile_id))
        except persons.PersonNotFound:
            pass
    if request.subject_value:
        return persons.person_find(kind=request.subject_kind, value=request.subject_value)
    return persons.Person([], [(request.subject_kind, "", bytes(request.subject_hash))])


# -- access -------------------------------------------------------------------------------------

@transaction.atomic
def dsr_access_start(*, request: DataSubjectRequest, actor) -> DataSubjectRequest:
    """Queue the access export (a Celery task; the page shows its progress)."""
    from consent.tasks import dsr_access_export_task

    if request.type != DataSubjectRequest.Type.ACCESS:
        raise RequestError("only access requests produce an export")
    _claim(request, actor, progress="queued")
    audit_record(actor=actor, action="dsr.export_started", object_type="dsr", object_id=request.pk)
    request_id = request.pk
    transaction.on_commit(lambda: dsr_access_export_task.delay(request_id))
    return request


def _jsonable(value):
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, str) and value.startswith(crypto.PREFIX + "."):
        try:
            return crypto.decrypt(value)  # e.g. an Identity value stored encrypted
        except crypto.DecryptionError:
            return value
    return value


def _table_rows(queryset) -> tuple[list[str], list[dict]]:
    rows = [{key: _jsonable(value) for key, value in row.items()} for row in queryset.order_by("pk").values()]
    header = [f.attname for f in queryset.model._meta.concrete_fields]
    return header, rows


def _consent_history(person: persons.Person) -> tuple[list[str], list[dict]]:
    keys = reference.purpose_keys_by_id()
    notices = {n.pk: n for n in NoticeVersion.objects.all()}
    records = persons.person_rows(next(loc for loc in registry().locations if loc.model == "consent.ConsentRecord"),
                                  person).order_by("sequence")
    header = ["sequence", "purpose", "granted", "source", "method", "captured_at", "decided_at", "notice",
              "page_url", "identifier_kind", "tc_string"]
    rows = []
    for record in records:
        notice = notices.get(record.notice_id)
        rows.append({"sequence": record.sequence, "purpose": keys.get(record.purpose_id), "granted": record.granted,
                     "source": record.source, "method": record.method,
                     "captured_at": record.captured_at.isoformat(), "decided_at": record.decided_at.isoformat(),
                     "notice": f"{notice.key} v{notice.version} ({notice.language})" if notice else "",
                     "page_url": record.page_url, "identifier_kind": record.subject_kind,
                     "tc_string": record.tc_string})
    return header, rows


def access_export_build(person: persons.Person) -> tuple[bytes, dict[str, int]]:
    """The zip: for every registered location, the person's rows as JSON and CSV."""
    buffer, counts = io.BytesIO(), {}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        sections = [("consent_history", *_consent_history(person))]
        for location in registry().locations:
            if location.model in ("consent.ConsentRecord", "consent.SuppressionEntry"):
                continue  # the history above is the readable form; suppression does not exist yet
            sections.append((location.model, *_table_rows(persons.person_rows(location, person))))
        for name, header, rows in sections:
            counts[name] = len(rows)
            archive.writestr(f"{name}.json", orjson.dumps(rows, option=orjson.OPT_INDENT_2))
            archive.writestr(f"{name}.csv", csv_text(header, ([row.get(column) for column in header]
                                                              for row in rows)))
        archive.writestr("README.txt", _readme(counts))
    return buffer.getvalue(), counts


def _readme(counts: dict[str, int]) -> str:
    lines = ["Everything this customer data platform holds about you, as of "
             f"{timezone.now():%Y-%m-%d %H:%M} UTC.", "",
             "Each table is given twice: as JSON and as CSV. Rows per table:", ""]
    lines += [f"  {name}: {count}" for name, count in sorted(counts.items())]
    lines += ["", "consent_history lists every consent decision recorded for your identifiers, oldest first."]
    return "\n".join(lines) + "\n"


def dsr_access_export(*, request_id: int) -> DataSubjectRequest:
    """Build, encrypt and store the access export of a request (run by the Celery task)."""
    request = DataSubjectRequest.objects.get(pk=request_id)
    if request.status != DataSubjectRequest.Status.IN_PROGRESS or request.type != DataSubjectRequest.Type.ACCESS:
        return request  # a duplicate delivery after completion: nothing to do
    DataSubjectRequest.objects.filter(pk=request.pk).update(progress="collecting data")
    data, counts = access_export_build(_person_of(request))
    sealed = crypto.encrypt_bytes(data)
    name = default_storage.save(f"{RESULT_FOLDER}/{request.reference}-{secrets.token_hex(8)}.zip.enc",
                                ContentFile(sealed))
    with transaction.atomic():
        request_file_delete(request)
        _complete(request, f"export ready: {sum(counts.values())} rows from {len(counts)} tables",
                  result_file=name, result_size=len(data), result_sha256=hashlib.sha256(data).hexdigest(),
                  result_expires_at=timezone.now() + timedelta(days=settings.CDP_DSR_FILE_DAYS))
        audit_record(action="dsr.export_completed", object_type="dsr", object_id=request.pk,
                     details={"rows": sum(counts.values()), "tables": len(counts)})
    logger.info("access export stored", extra={"dsr_id": request.pk, "rows": sum(counts.values())})
    return request


def dsr_access_failed(*, request_id: int, reason: str) -> None:
    DataSubjectRequest.objects.filter(pk=request_id, status=DataSubjectRequest.Status.IN_PROGRESS).update(
        progress=f"failed: {reason}"[:200])


def dsr_result_read(*, request: DataSubjectRequest, actor) -> bytes:
    """The decrypted zip of an access request (audited)."""
    if not request.result_file:
        raise RequestError("this request has no file (not produced yet, expired or erased)")
    with default_storage.open(request.result_file, "rb") as handle:
        data = crypto.decrypt_bytes(handle.read())
    audit_record(actor=actor, action="dsr.downloaded", object_type="dsr", object_id=request.pk,
                 details={"bytes": len(data)})
    return data


def request_file_delete(request: DataSubjectRequest) -> None:
    if request.result_file and default_storage.exists(request.result_file):
        default_storage.delete(request.result_file)


def dsr_files_expire(*, now: datetime | None = None) -> int:
    """Delete access exports past their expiry; returns how many."""
    now = now or timezone.now()
    expired = DataSubjectRequest.objects.exclude(result_file="").filter(result_expires_at__lte=now)
    count = 0
    for request in expired:
        request_file_delete(request)
        DataSubjectRequest.objects.filter(pk=request.pk).update(result_file="", outcome="export expired and deleted")
        count += 1
    return count


# -- erasure, anonymisation, rectification -----------------------------------------------------

@dataclass
class ErasureOutcome:
    request: DataSubjectRequest
    receipt_id: int
    counts: dict


@transaction.atomic
def dsr_erase(*, request: DataSubjectRequest, actor) -> ErasureOutcome:
    """Erase the person of an erasure request (see consent.services.person.person_erase)."""
    if request.type != DataSubjectRequest.Type.ERASURE:
        raise RequestError("only erasure requests erase")
    _claim(request, actor)
    result = persons.person_erase(person=_person_of(request), actor=actor, request=request)
    rows = sum(v.get("deleted", 0) for v in result.counts.values())
    _complete(request, f"erased: {rows} rows deleted, receipt {result.receipt.pk}")
    return ErasureOutcome(request, result.receipt.pk, result.counts)


@transaction.atomic
def dsr_anonymise(*, request: DataSubjectRequest, actor) -> ErasureOutcome:
    if request.type not in (DataSubjectRequest.Type.ANONYMISATION, DataSubjectRequest.Type.ERASURE):
        raise RequestError("only anonymisation or erasure requests anonymise")
    _claim(request, actor)
    result = persons.person_anonymise(person=_person_of(request), actor=actor, request=request, suppress=True)
    _complete(request, f"anonymised: receipt {result.receipt.pk}")
    return ErasureOutcome(request, result.receipt.pk, result.counts)


@transaction.atomic
def profile_rectify(*, profile_id, changes: dict, actor, request: DataSubjectRequest | None = None) -> list[str]:
    """Correct personal fields of a profile (the profile screen calls this); returns the fields
    changed. Audited with field names only, never the values."""
    from profiles.models import Profile

    unknown = sorted(set(changes) - set(RECTIFIABLE_FIELDS))
    if unknown:
        raise ConsentInputError("invalid_field", f"cannot rectify {', '.join(unknown)}")
    profile = Profile.objects.select_for_update().get(id=profile_id)
    changed = []
    for name, raw in changes.items():
        value = _rectified_value(name, raw)
        if getattr(profile, name) != value:
            setattr(profile, name, value)
            changed.append(name)
    if changed:
        profile.save(update_fields=[*changed, "updated_at"])
    audit_record(actor=actor, action="profile.rectified", object_type="profile", object_id=profile.pk,
                 details={"fields": changed, "request": request.pk if request else None})
    if request is not None:
        _claim(request, actor)
        _complete(request, f"rectified: {', '.join(changed) or 'nothing changed'}")
    return changed


def _rectified_value(name: str, raw):
    text = "" if raw is None else str(raw).strip()
    if name in ("first_name", "last_name"):
        return text or None
    if name == "birth_year":
        if not text:
            return None
        if not text.isdigit() or not 1900 <= int(text) <= datetime.now(UTC).year:
            raise ConsentInputError("invalid_value", "birth year must be a year between 1900 and now", name)
        return int(text)
    if name == "country":
        if text and (len(text) != 2 or not text.isalpha()):
            raise ConsentInputError("invalid_value", "country must be a two-letter ISO code", name)
        return text.upper()
    return text[:120]


def request_is_overdue(request: DataSubjectRequest) -> bool:
    return request.is_open and request.due_at < timezone.now()


def consent_history_records(person: persons.Person):
    """The ledger records of a person's identifiers, newest first (for the person screen)."""
    location = next(loc for loc in registry().locations if loc.model == "consent.ConsentRecord")
    return persons.person_rows(location, person).select_related("purpose", "notice").order_by("-sequence")

