"""Ways consent arrives: the REST API (CMPs and back ends), the Segment consent context on
ingested events, import consent columns, and staff. Each ends in one `ledger_append`.

Evidence is minimised on capture: the page URL keeps scheme, host and path (query strings and
fragments often carry emails or tokens), the IP address is stored only as a keyed hash.
"""

import ipaddress
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from django.utils.dateparse import parse_date, parse_datetime

from cdp import crypto
from consent import reference
from consent.models import ConsentRecord, NoticeVersion
from consent.services import ledger
from consent.services.audit import audit_record
from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
from consent.tcf import TCStringError
from consent.tcf import decode as tcf_decode
from profiles.identifiers import identity_hash, normalize

logger = logging.getLogger(__name__)

IDENTIFIER_KINDS = ("anonymous_id", "user_id", "email", "phone", "device_id", "crm_id")
MAX_URL = 2000
MAX_USER_AGENT = 500


class ConsentInputError(ValueError):
    """Bad input, with a machine-readable code and a message safe to show (no personal data)."""

    def __init__(self, code: str, message: str, field_name: str = ""):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field_name


@dataclass(frozen=True)
class Subject:
    kind: str
    hash: bytes
    profile_id: UUID | None = None


@dataclass(frozen=True)
class Evidence:
    page_url: str = ""
    user_agent: str = ""
    ip_hash: bytes | None = None


@dataclass
class RecordResult:
    appended: list = field(default_factory=list)
    unmapped_categories: list[str] = field(default_factory=list)


def subject_from_identifier(kind: str, value) -> Subject:
    if kind not in IDENTIFIER_KINDS:
        raise ConsentInputError("invalid_identifier_kind",
                                f"identifier kind must be one of {', '.join(IDENTIFIER_KINDS)}", "identifier")
    normalized = normalize(kind, value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if not normalized:
        raise ConsentInputError("invalid_identifier", f"the {kind} given is not usable", "identifier")
    return Subject(kind, identity_hash(kind, normalized))


def subject_for_profile(profile_id) -> Subject:
    profile_id = UUID(str(profile_id))
    return Subject(PROFILE_SUBJECT, profile_subject_hash(profile_id), profile_id)


def evidence_from(*, page_url: str = "", user_agent: str = "", ip: str | None = None) -> Evidence:
    return Evidence(_clean_url(page_url), (user_agent or "")[:MAX_USER_AGENT].replace("\x00", ""), _ip_hash(ip))


def _clean_url(url) -> str:
    if not url or not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))[:MAX_URL]


def _ip_hash(ip) -> bytes | None:
    if not ip or not isinstance(ip, str):
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    return crypto.keyed_hash("ip", address.compressed)


def notice_resolve(value) -> int | None:
    """A notice version given as an id or as {"key", "version", "language"}; None if absent."""
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        found = NoticeVersion.objects.filter(pk=value).values_list("pk", flat=True).first()
    elif isinstance(value, dict) and {"key", "version"} <= set(value):
        found = NoticeVersion.objects.filter(key=str(value["key"]), version=str(value["version"]),
                                             language=str(value.get("language") or "en")).values_list(
            "pk", flat=True).first()
    else:
        raise ConsentInputError("invalid_notice", "notice must be an id or {key, version, language}", "notice")
    if found is None:
        raise ConsentInputError("unknown_notice", "no such notice version (create it first)", "notice")
    return found


def method_for(granted_values) -> str:
    """accept (all granted), reject (none granted) or save (a choice per purpose)."""
    values = set(granted_values)
    if values == {True}:
        return ConsentRecord.Method.ACCEPT
    if values == {False}:
        return ConsentRecord.Method.REJECT
    return ConsentRecord.Method.SAVE


def purpose_decisions(purposes: dict) -> dict[int, bool]:
    """{purpose key: bool} -> {purpose id: bool}; unknown or inactive keys are an error."""
    known = reference.purposes()
    decisions = {}
    for key, granted in purposes.items():
        info = known.get(key)
        if info is None or not info.is_active:
            raise ConsentInputError("unknown_purpose", f"unknown purpose {str(key)[:60]!r}; known: "
                                    f"{', '.join(k for k, p in known.items() if p.is_active)}", "purposes")
        if not isinstance(granted, bool):
            raise ConsentInputError("invalid_value", f"purpose {key!r} must be true or false", "purposes")
        decisions[info.id] = granted
    return decisions


@dataclass
class ConsentRequest:
    """A decision as an API or a screen receives it (already authenticated)."""

    subject: Subject
    purposes: dict = field(default_factory=dict)  # our purpose keys -> bool
    categories: dict = field(default_factory=dict)  # CMP categories -> bool
    cmp: str = "segment"
    source: str = ConsentRecord.Source.API
    method: str = ""
    notice: object = None
    client_timestamp: datetime | None = None
    evidence: Evidence = field(default_factory=Evidence)
    tc_string: str = ""
    gpc: bool = False
    actor: object = None
    actor_key_id: int | None = None
    details: dict = field(default_factory=dict)


def consent_record(request: ConsentRequest) -> RecordResult:
    """Record one person's decision on one or many purposes (one ledger record per purpose)."""
    decisions = purpose_decisions(request.purposes)
    unmapped: list[str] = []
    if request.categories:
        mapped, unmapped = reference.map_categories(request.cmp, request.categories)
        decisions = {**mapped, **decisions}  # explicit purposes win over mapped categories
    tcf = None
    if request.tc_string:
        try:
            decoded = tcf_decode(request.tc_string)
        except TCStringError as exc:
            raise ConsentInputError("invalid_tc_string", f"TC string: {exc}", "tc_string") from None
        tcf = decoded.summary()
        decisions = {**reference.tcf_decisions(decoded), **decisions}
    gpc_ids = {p.id for p in reference.purposes().values() if p.withdrawn_by_gpc and p.is_active} if request.gpc else set()
    for purpose_id in gpc_ids:
        decisions[purpose_id] = False
    if not decisions:
        raise ConsentInputError("no_purposes", "name at least one purpose (purposes, categories or tc_string)",
                                "purposes")
    notice_id = notice_resolve(request.notice)
    method = request.method or method_for([v for k, v in decisions.items() if k not in gpc_ids]
                                          or decisions.values())
    actor_id = request.actor.pk if getattr(request.actor, "is_authenticated", False) else None
    records = [ledger.RecordInput(
        subject_kind=request.subject.kind, subject_hash=request.subject.hash, purpose_id=purpose_id, granted=granted,
        source=request.source, method=ConsentRecord.Method.GPC if purpose_id in gpc_ids else method,
        notice_id=notice_id, client_timestamp=request.client_timestamp, page_url=request.evidence.page_url,
        user_agent=request.evidence.user_agent, ip_hash=request.evidence.ip_hash, actor_id=actor_id,
        actor_key_id=request.actor_key_id, tc_string=request.tc_string, tcf=tcf,
        details={**request.details, **({"categories": {str(k): bool(v) for k, v in request.categories.items()}}
                                       if request.categories else {})},
        link_profile_id=request.subject.profile_id,
    ) for purpose_id, granted in sorted(decisions.items())]
    appended = ledger.ledger_append(records)
    if actor_id:
        keys = reference.purpose_keys_by_id()
        audit_record(actor=request.actor, action="consent.recorded",
                     object_type="profile" if request.subject.profile_id else "subject",
                     object_id=str(request.subject.profile_id or request.subject.kind),
                     details={"purposes": {keys[r.record.purpose_id]: r.record.granted for r in appended},
                              "records": [r.sequence for r in appended]})
    logger.info("consent recorded", extra={"records": len(appended), "source": request.source})
    return RecordResult(appended, unmapped)


# -- the Segment consent context on ingested events --------------------------------------------

@dataclass
class BulkResult:
    recorded: int = 0
    unchanged: int = 0
    unmapped_categories: list[str] = field(default_factory=list)
    errors: list = field(default_factory=list)


def _current_states(subjects: set[tuple[str, bytes]]) -> dict[tuple[str, bytes, int], tuple[bool, datetime]]:
    from django.db import connection

    if not subjects:
        return {}
    kinds, hashes = zip(*subjects, strict=True)
    with connection.cursor() as cursor:
        # Index: subject_consent_uniq (subject_hash, subject_kind, purpose_id).
        cursor.execute(
            "SELECT c.subject_kind, c.subject_hash, c.purpose_id, c.granted, c.decided_at "
            "FROM consent_subjectconsent c JOIN unnest(%s::text[], %s::bytea[]) AS s(kind, hash) "
            "ON c.subject_hash = s.hash AND c.subject_kind = s.kind", [list(kinds), list(hashes)])
        return {(kind, bytes(digest), purpose): (granted, decided) for kind, digest, purpose, granted, decided
                in cursor.fetchall()}


def _parse_timestamp(value) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def consent_from_segment_messages(*, messages: list[dict], source_key_id: int | None = None) -> BulkResult:
    """Record `context.consent.categoryPreferences` of ingested messages (Segment Consent
    Management), for the message's userId and anonymousId. Only changes are appended: a
    preference repeated on every event does not grow the ledger."""
    result = BulkResult()
    wanted: dict[tuple[str, bytes, int], tuple[bool, dict]] = {}
    unmapped: set[str] = set()
    for message in messages:
        context = message.get("context") if isinstance(message, dict) else None
        consent = context.get("consent") if isinstance(context, dict) else None
        preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not isinstance(preferences, dict) or not preferences:
            continue
        # Only real booleans count: a string "false" must not read as consent.
        preferences = {k: v for k, v in preferences.items() if isinstance(v, bool)}
        if not preferences:
            continue
        decisions, missing = reference.map_categories("segment", preferences)
        unmapped.update(missing)
        for kind, key in (("user_id", "userId"), ("anonymous_id", "anonymousId")):
            try:
                subject = subject_from_identifier(kind, message.get(key))
            except ConsentInputError:
                continue
            for purpose_id, granted in decisions.items():
                wanted[(subject.kind, subject.hash, purpose_id)] = (granted, message)
    current = _current_states({(kind, digest) for kind, digest, _ in wanted})
    records = []
    for (kind, digest, purpose_id), (granted, message) in wanted.items():
        if (kind, digest, purpose_id) in current and current[(kind, digest, purpose_id)][0] == granted:
            result.unchanged += 1
            continue
        context = message.get("context") or {}
        page = context.get("page") if isinstance(context.get("page"), dict) else {}
        evidence = evidence_from(page_url=page.get("url", ""), user_agent=context.get("userAgent", "") or "",
                                 ip=context.get("ip"))
        preferences = {k: v for k, v in context["consent"]["categoryPreferences"].items() if isinstance(v, bool)}
        records.append(ledger.RecordInput(
            subject_kind=kind, subject_hash=digest, purpose_id=purpose_id, granted=granted,
            source=ConsentRecord.Source.WEB_BANNER, method=method_for(preferences.values()),
            client_timestamp=_parse_timestamp(message.get("timestamp") or message.get("originalTimestamp")),
            page_url=evidence.page_url, user_agent=evidence.user_agent, ip_hash=evidence.ip_hash,
            actor_key_id=source_key_id,
            details={"categories": {str(k)[:120]: v for k, v in preferences.items()},
                     "message_id": str(message.get("messageId", ""))[:100]}))
    ledger.ledger_append(records)
    result.recorded = len(records)
    result.unmapped_categories = sorted(unmapped)
    return result


# -- import consent columns ---------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "y", "granted", "opt-in", "optin", "opted in", "subscribed", "on"}
_FALSE = {"0", "false", "no", "n", "withdrawn", "denied", "opt-out", "optout", "opted out", "unsubscribed", "off"}


@dataclass(frozen=True)
class ImportConsentRow:
    row_number: int
    identifier_kind: str
    identifier: str
    purpose: str
    granted: object
    date: str = ""
    # The identifier's keyed hash, for callers that hold no plaintext (an import's staging
    # table); `identifier` is then ignored. identifier_kind "profile_id" names a profile.
    identifier_hash: bytes | None = None


@dataclass(frozen=True)
class RowError:
    row_number: int
    code: str
    message: str


def _import_granted(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConsentInputError("invalid_granted", "granted must be yes/no, true/false, 1/0, granted/withdrawn")


def _import_date(value, now: datetime) -> datetime:
    text = str(value or "").strip()
    if not text:
        return now
    parsed = None
    try:
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)):
            parsed = datetime.combine(day, time.min)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ConsentInputError("invalid_date", "date must be ISO 8601, e.g. 2026-03-01 or 2026-03-01T09:30:00Z")
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if parsed > now:
        raise ConsentInputError("future_date", "the consent date lies in the future")
    if parsed.date() < date(1990, 1, 1):
        raise ConsentInputError("invalid_date", "the consent date is implausibly old")
    return parsed


def _import_purpose(value) -> int:
    decisions, unmapped = reference.map_categories("import", {str(value or "").strip(): True})
    if unmapped or len(decisions) != 1:
        raise ConsentInputError("unknown_purpose", "purpose is not a known purpose key or import category")
    return next(iter(decisions))


def _import_subject(row: ImportConsentRow) -> Subject:
    if row.identifier_kind == PROFILE_SUBJECT:
        try:
            return subject_for_profile(row.identifier)
        except ValueError:
            raise ConsentInputError("invalid_identifier", "the profile id given is not usable", "identifier") from None
    if row.identifier_hash is None:
        return subject_from_identifier(row.identifier_kind, row.identifier)
    if row.identifier_kind not in IDENTIFIER_KINDS or len(row.identifier_hash) != 32:
        raise ConsentInputError("invalid_identifier", "the identifier hash given is not usable", "identifier")
    return Subject(row.identifier_kind, bytes(row.identifier_hash))


def _import_rows_parse(rows: list[ImportConsentRow], result: BulkResult, *, subjects: bool = True) -> list[tuple]:
    now = datetime.now(UTC)
    parsed = []
    for row in rows:
        try:
            subject = _import_subject(row) if subjects else None
            parsed.append((row, subject, _import_purpose(row.purpose), _import_granted(row.granted),
                           _import_date(row.date, now)))
        except ConsentInputError as exc:
            result.errors.append(RowError(row.row_number, exc.code, exc.message))
    return parsed


def consent_import_rows_check(*, rows: list[ImportConsentRow]) -> list[RowError]:
    """The errors of the purpose, granted and date columns that `consent_from_import_rows` would
    report, recording nothing, so an import can reject those rows before it loads anything of
    them. Identifiers are not checked (the import has its own rules for them)."""
    result = BulkResult()
    _import_rows_parse(rows, result, subjects=False)
    return result.errors


def import_suppression_lifts(*, decisions: list[tuple[str, bytes, datetime]]) -> set[tuple[str, bytes]]:
    """Which suppressed identifiers granted import decisions (kind, keyed hash, decided at) lift:
    only a decision dated after the erasure is new consent, so re-importing an old file never
    brings an erased person back."""
    from consent.models import SuppressionEntry

    newest: dict[tuple[str, bytes], datetime] = {}
    for kind, digest, decided_at in decisions:
        key = (kind, bytes(digest))
        newest[key] = max(decided_at, newest.get(key, decided_at))
    if not newest:
        return set()
    # Index: suppression_uniq (value_hash, kind).
    entries = SuppressionEntry.objects.filter(value_hash__in=[digest for _, digest in newest],
                                              lifted_at__isnull=True).values_list("kind", "value_hash", "created_at")
    return {(kind, bytes(digest)) for kind, digest, created_at in entries
            if (kind, bytes(digest)) in newest and newest[(kind, bytes(digest))] > created_at}


def consent_from_import_rows(*, rows: list[ImportConsentRow], actor=None, source_key_id: int | None = None,
                             import_reference: str = "") -> BulkResult:
    """Record consent columns of an import (purpose, granted, date per row). Bad rows come back
    as row-level errors; good rows are recorded. A row repeating what is already known (same
    state, not newer) is counted unchanged, so re-running an import adds nothing."""
    result = BulkResult()
    parsed = _import_rows_parse(rows, result)
    current = _current_states({(s.kind, s.hash) for _, s, _, _, _ in parsed})
    records, seen = [], {}
    actor_id = actor.pk if getattr(actor, "is_authenticated", False) else None
    for row, subject, purpose_id, granted, decided_at in parsed:
        known = seen.get((subject.kind, subject.hash, purpose_id)) or current.get((subject.kind, subject.hash,
                                                                                   purpose_id))
        if known and known[0] == granted and known[1] >= decided_at:
            result.unchanged += 1
            continue
        seen[(subject.kind, subject.hash, purpose_id)] = (granted, decided_at)
        records.append(ledger.RecordInput(
            subject_kind=subject.kind, subject_hash=subject.hash, purpose_id=purpose_id, granted=granted,
            source=ConsentRecord.Source.IMPORT, method=ConsentRecord.Method.IMPORT,
            client_timestamp=decided_at if str(row.date or "").strip() else None, decided_at=decided_at,
            actor_id=actor_id, actor_key_id=source_key_id,
            details={"import": str(import_reference)[:100], "row": row.row_number},
            link_profile_id=subject.profile_id))
    ledger.ledger_append(records)
    result.recorded = len(records)
    if actor_id and records:
        audit_record(actor=actor, action="consent.imported", object_type="import",
                     object_id=str(import_reference)[:100], details={"recorded": result.recorded,
                                                                     "unchanged": result.unchanged,
                                                                     "errors": len(result.errors)})
    logger.info("import consent recorded", extra={"recorded": result.recorded, "unchanged": result.unchanged,
                                                  "errors": len(result.errors)})
    return result
