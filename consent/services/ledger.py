"""The consent ledger: canonical serialisation, hash-chained appends, verification, head export.

Canonical serialisation (version 1) of a record — what `record_hash` = SHA-256 covers:
UTF-8 JSON with keys sorted at every level, no whitespace, non-ASCII as UTF-8, integers only
(no floats), timestamps as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, bytes as lower-case hex:

    {"v": 1, "seq": <sequence>, "prev": <prev_hash>,
     "subject": {"kind": ..., "hash": ...}, "purpose": <purpose id>, "granted": true|false,
     "source": ..., "method": ..., "notice": {"id": ..., "sha256": <text_sha256>} | null,
     "captured_at": ..., "client_timestamp": ... | null, "decided_at": ...,
     "evidence": {"page_url": ..., "user_agent": ..., "ip_hash": ... | null},
     "actor": {"user": <id> | null, "key": <id> | null},
     "tc_string": ..., "tcf": {...} | null, "details": {...}}

`prev` of the first record is 64 zeros. Appends take `pg_advisory_xact_lock(LEDGER_LOCK)`,
read the head, and write the new rows with COPY in the caller's transaction, so concurrent
appends queue up instead of forking the chain (the lock is held until that transaction ends:
append late in a transaction). The derived state tables are updated in the same transaction
(consent.services.state).

A daily head file (`ledger_head_export`) records the last sequence and hash outside the
database, HMAC-signed with CDP_HASH_KEY, so deleting the tail of the chain is detected too.
"""

import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import orjson
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

LEDGER_LOCK = 0x0C0A5E47  # pg_advisory_xact_lock key: unique in this project
GENESIS = bytes(32)
CANONICAL_VERSION = 1
HEAD_PREFIX = "consent-ledger-head-"

RECORD_COLUMNS = ("sequence", "prev_hash", "record_hash", "subject_kind", "subject_hash", "purpose_id", "granted",
                  "source", "method", "notice_id", "captured_at", "client_timestamp", "decided_at", "page_url",
                  "user_agent", "ip_hash", "actor_id", "actor_key_id", "tc_string", "tcf", "details")


@dataclass(frozen=True)
class RecordInput:
    """One decision to append. `link_profile_id` is not part of the record: it tells the state
    tables which profile the subject belongs to when the caller knows (staff screens)."""

    subject_kind: str
    subject_hash: bytes
    purpose_id: int
    granted: bool
    source: str
    method: str
    notice_id: int | None = None
    client_timestamp: datetime | None = None
    decided_at: datetime | None = None
    page_url: str = ""
    user_agent: str = ""
    ip_hash: bytes | None = None
    actor_id: int | None = None
    actor_key_id: int | None = None
    tc_string: str = ""
    tcf: dict | None = None
    details: dict = field(default_factory=dict)
    link_profile_id: UUID | None = None


@dataclass(frozen=True)
class Appended:
    sequence: int
    record_hash: bytes
    record: RecordInput
    captured_at: datetime
    decided_at: datetime


def timestamp_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_json(value, path="details") -> None:
    """Only what survives a jsonb round trip byte for byte: no floats, no NUL characters."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings")
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]")
    elif isinstance(value, float):
        raise ValueError(f"{path}: floats are not allowed in ledger records")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{path}: NUL characters are not allowed")
    elif not (value is None or isinstance(value, bool | int)):
        raise ValueError(f"{path}: {type(value).__name__} is not JSON")


def canonical(row: dict) -> bytes:
    """The canonical serialisation of one record (see the module docstring)."""
    content = {
        "v": CANONICAL_VERSION,
        "seq": row["sequence"],
        "prev": bytes(row["prev_hash"]).hex(),
        "subject": {"kind": row["subject_kind"], "hash": bytes(row["subject_hash"]).hex()},
        "purpose": row["purpose_id"],
        "granted": bool(row["granted"]),
        "source": row["source"],
        "method": row["method"],
        "notice": {"id": row["notice_id"], "sha256": row["notice_sha256"]} if row["notice_id"] else None,
        "captured_at": timestamp_text(row["captured_at"]),
        "client_timestamp": timestamp_text(row["client_timestamp"]),
        "decided_at": timestamp_text(row["decided_at"]),
        "evidence": {"page_url": row["page_url"] or "", "user_agent": row["user_agent"] or "",
                     "ip_hash": bytes(row["ip_hash"]).hex() if row["ip_hash"] is not None else None},
        "actor": {"user": row["actor_id"], "key": row["actor_key_id"]},
        "tc_string": row["tc_string"] or "",
        "tcf": row["tcf"],
        "details": row["details"] or {},
    }
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


def record_hash(row: dict) -> bytes:
    return hashlib.sha256(canonical(row)).digest()


def ledger_head() -> tuple[int, bytes]:
    """(last sequence, its record hash); (0, GENESIS) for an empty ledger."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sequence, record_hash FROM consent_consentrecord ORDER BY sequence DESC LIMIT 1")
        row = cursor.fetchone()
    return (row[0], bytes(row[1])) if row else (0, GENESIS)


def _notice_digests(notice_ids: set[int]) -> dict[int, str]:
    if not notice_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, text_sha256 FROM consent_noticeversion WHERE id = ANY(%s)", [list(notice_ids)])
        found = dict(cursor.fetchall())
    missing = notice_ids - set(found)
    if missing:
        raise ValueError(f"unknown notice version(s): {sorted(missing)}")
    return found


def ledger_append(records: Sequence[RecordInput]) -> list[Appended]:
    """Append records to the chain and bring the current-consent tables in step (one transaction)."""
    if not records:
        return []
    from consent.services import state

    for record in records:
        _check_json(record.details)
        _check_json(record.tcf, "tcf")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK])
        # Fold decisions made before a subject was linked to its profile first, so the records
        # appended now count as the person's newest decisions (state module docstring).
        state.subjects_link_before_append(records)
        appended = _append_locked(cursor, records)
        state.state_apply(first=appended[0].sequence, last=appended[-1].sequence)
    return appended


def _append_locked(cursor, records: Sequence[RecordInput]) -> list[Appended]:
    """Write records after the head; the caller holds LEDGER_LOCK."""
    sequence, previous = ledger_head()
    digests = _notice_digests({r.notice_id for r in records if r.notice_id})
    captured_at = datetime.now(UTC)
    rows, appended = [], []
    for record in records:
        sequence += 1
        decided_at = min(record.decided_at, captured_at) if record.decided_at else captured_at
        row = {"sequence": sequence, "prev_hash": previous, "subject_kind": record.subject_kind,
               "subject_hash": record.subject_hash, "purpose_id": record.purpose_id, "granted": record.granted,
               "source": record.source, "method": record.method, "notice_id": record.notice_id,
               "notice_sha256": digests.get(record.notice_id), "captured_at": captured_at,
               "client_timestamp": record.client_timestamp, "decided_at": decided_at,
               "page_url": record.page_url, "user_agent": record.user_agent, "ip_hash": record.ip_hash,
               "actor_id": record.actor_id, "actor_key_id": record.actor_key_id, "tc_string": record.tc_string,
               "tcf": record.tcf, "details": record.details}
        digest = record_hash(row)
        rows.append((sequence, previous, digest, record.subject_kind, record.subject_hash, record.purpose_id,
                     record.granted, record.source, record.method, record.notice_id, captured_at,
                     record.client_timestamp, decided_at, record.page_url, record.user_agent, record.ip_hash,
                     record.actor_id, record.actor_key_id, record.tc_string,
                     orjson.dumps(record.tcf).decode() if record.tcf is not None else None,
                     orjson.dumps(record.details).decode()))
        appended.append(Appended(sequence, digest, record, captured_at, decided_at))
        previous = digest
    with cursor.cursor.copy(f"COPY consent_consentrecord ({', '.join(RECORD_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return appended


# -- verification -------------------------------------------------------------------------------

@dataclass
class Broken:
    sequence: int
    reason: str


@dataclass
class VerifyResult:
    records_checked: int = 0
    last_sequence: int = 0
    heads_checked: int = 0
    first_broken: Broken | None = None
    head_problem: str = ""

    @property
    def is_intact(self) -> bool:
        return self.first_broken is None and not self.head_problem

    def summary(self) -> str:
        if self.first_broken:
            return f"BROKEN at record {self.first_broken.sequence}: {self.first_broken.reason}"
        if self.head_problem:
            return f"BROKEN: {self.head_problem}"
        return (f"intact: {self.records_checked:,} records, chain head {self.last_sequence}, "
                f"{self.heads_checked} exported head(s) match")


_VERIFY_SQL = (
    "SELECT r.sequence, r.prev_hash, r.record_hash, r.subject_kind, r.subject_hash, r.purpose_id, r.granted, "
    "r.source, r.method, r.notice_id, n.text_sha256, r.captured_at, r.client_timestamp, r.decided_at, "
    "r.page_url, r.user_agent, r.ip_hash, r.actor_id, r.actor_key_id, r.tc_string, r.tcf, r.details "
    "FROM consent_consentrecord r LEFT JOIN consent_noticeversion n ON n.id = r.notice_id "
    "WHERE r.sequence > %s ORDER BY r.sequence LIMIT %s"  # primary key range scan
)
_VERIFY_NAMES = ("sequence", "prev_hash", "record_hash", "subject_kind", "subject_hash", "purpose_id", "granted",
                 "source", "method", "notice_id", "notice_sha256", "captured_at", "client_timestamp", "decided_at",
                 "page_url", "user_agent", "ip_hash", "actor_id", "actor_key_id", "tc_string", "tcf", "details")


def _json_value(value):
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def ledger_verify(*, head_dir: Path | None = None, batch_size: int = 5000, progress=None) -> VerifyResult:
    """Walk the chain in order and report the FIRST record that does not verify, then check the
    exported head files against the chain (a deleted tail shows up there)."""
    result = VerifyResult()
    expected_sequence, previous = 1, GENESIS
    hashes_by_sequence = {}
    heads = _read_heads(head_dir)
    wanted = {head["sequence"] for head in heads}
    with connection.cursor() as cursor:
        while True:
            cursor.execute(_VERIFY_SQL, [expected_sequence - 1, batch_size])
            rows = cursor.fetchall()
            if not rows:
                break
            for values in rows:
                row = dict(zip(_VERIFY_NAMES, values, strict=True))
                row["tcf"], row["details"] = _json_value(row["tcf"]), _json_value(row["details"])
                problem = _check_row(row, expected_sequence, previous)
                if problem:
                    result.first_broken = Broken(row["sequence"] if "missing" not in problem else expected_sequence,
                                                 problem)
                    return result
                previous = bytes(row["record_hash"])
                if row["sequence"] in wanted:
                    hashes_by_sequence[row["sequence"]] = previous
                result.records_checked += 1
                result.last_sequence = row["sequence"]
                expected_sequence += 1
            if progress:
                progress(result.records_checked)
    _check_heads(result, heads, hashes_by_sequence)
    return result


def _check_row(row: dict, expected_sequence: int, previous: bytes) -> str:
    if row["sequence"] != expected_sequence:
        return f"record {expected_sequence} is missing (next present is {row['sequence']})"
    if bytes(row["prev_hash"]) != previous:
        return "prev_hash does not match the record before (a record before it was changed, removed or inserted)"
    if record_hash(row) != bytes(row["record_hash"]):
        return "content does not match its record_hash (the record was changed)"
    return ""


def _check_heads(result: VerifyResult, heads: list[dict], hashes: dict[int, bytes]) -> None:
    for head in heads:
        if head.get("invalid"):
            result.head_problem = f"head file {head['file']} is not valid: {head['invalid']}"
            return
        if head["sequence"] > result.last_sequence:
            result.head_problem = (f"the ledger ends at record {result.last_sequence}, but head file {head['file']} "
                                   f"(exported {head['exported_at']}) names record {head['sequence']}: "
                                   "records were removed from the end")
            return
        if head["sequence"] and hashes.get(head["sequence"]) != bytes.fromhex(head["record_hash"]):
            result.head_problem = (f"record {head['sequence']} differs from head file {head['file']}: "
                                   "the chain was rewritten")
            return
        result.heads_checked += 1


# -- head export --------------------------------------------------------------------------------

def head_directory(head_dir: Path | None = None) -> Path:
    return Path(head_dir or settings.CDP_CONSENT_HEAD_DIR)


def _signature(payload: dict) -> str:
    body = orjson.dumps({k: v for k, v in payload.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(settings.CDP_HASH_KEY.encode(), body, hashlib.sha256).hexdigest()


def ledger_head_export(*, head_dir: Path | None = None, now: datetime | None = None) -> Path:
    """Write today's head file (sequence + hash of the last record, signed). Idempotent per day:
    a later export the same day replaces the file only if the chain has grown."""
    now = now or datetime.now(UTC)
    sequence, digest = ledger_head()
    directory = head_directory(head_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{HEAD_PREFIX}{now:%Y-%m-%d}.json"
    payload = {"sequence": sequence, "record_hash": digest.hex(), "exported_at": timestamp_text(now),
               "database": settings.DATABASES["default"]["NAME"]}
    payload["signature"] = _signature(payload)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(tmp, path)
    logger.info("consent ledger head exported", extra={"sequence": sequence})
    return path


def _read_heads(head_dir: Path | None) -> list[dict]:
    directory = head_directory(head_dir)
    if not directory.is_dir():
        return []
    heads = []
    for path in sorted(directory.glob(f"{HEAD_PREFIX}*.json")):
        try:
            payload = orjson.loads(path.read_bytes())
            sequence, digest = int(payload["sequence"]), str(payload["record_hash"])
            bytes.fromhex(digest)
        except (OSError, ValueError, KeyError, TypeError):
            heads.append({"file": path.name, "invalid": "unreadable", "sequence": 0})
            continue
        if payload.get("database") not in (None, settings.DATABASES["default"]["NAME"]):
            continue  # another database's ledger (e.g. a test or bench database)
        if not hmac.compare_digest(str(payload.get("signature", "")), _signature(payload)):
            heads.append({"file": path.name, "invalid": "signature does not match", "sequence": sequence})
            continue
        heads.append({"file": path.name, "sequence": sequence, "record_hash": digest,
                      "exported_at": payload.get("exported_at", "")})
    return heads


def ledger_heads(*, head_dir: Path | None = None) -> list[dict]:
    """The exported head files (newest first) for the verify screen."""
    return list(reversed(_read_heads(head_dir)))
