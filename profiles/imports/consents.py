"""Consent columns and erased people in imports.

- Consent columns (purpose, granted, date) belong to the consent ledger. After staging,
  `consent_rows_reject` removes rows whose statement the ledger would refuse
  (consent.services.inputs.consent_import_rows_check) before anything of them loads; late in the
  import's transaction `consents_record` appends the loaded rows' statements through
  `consent_from_import_rows`, so they commit or roll back with the file.
- An identifier of an erased person (consent.enforcement.suppressed_identifiers_staged, asked once per
  file) never comes back through an import: its rows are not loaded and are reported without the
  value, unless the same file grants consent for that identifier dated after the erasure. That
  row loads, and its consent, appended to the ledger, lifts the suppression (consent.services.state).
- `pending_consents_handover` moves the statements that imports kept before the ledger existed
  (the retired table profiles_pendingconsent) into the ledger: `manage.py import_consents_handover`.
"""

import logging
from dataclasses import dataclass

from django.db import connection, transaction
from psycopg import sql

from consent.enforcement import suppressed_identifiers_staged
from consent.services.inputs import (
    ImportConsentRow,
    consent_from_import_rows,
    consent_import_rows_check,
    import_suppression_lifts,
)

logger = logging.getLogger(__name__)

ERASED_REASON = "identifier belongs to an erased person"
RECORD_BATCH = 5000  # statements per ledger append (rows x identifiers stay in memory per batch)
PENDING_TABLE = "profiles_pendingconsent"


def consent_rows_reject(cursor, *, headers: dict[str, str]) -> list[tuple]:
    """Rows whose consent statement the ledger would refuse leave the stage; returns report lines.
    The ledger's checks do not depend on who the row names: each distinct (purpose, granted, date)
    of the file is checked once. `headers`: error code -> the file column it is about."""
    cursor.execute("SELECT DISTINCT consent_purpose, consent_granted, consent_at FROM import_stage "
                   "WHERE consent_purpose IS NOT NULL")
    statements = cursor.fetchall()
    refused = consent_import_rows_check(rows=[
        ImportConsentRow(position, "", "", purpose, "" if granted is None else str(granted).lower(),
                         at.isoformat() if at else "")
        for position, (purpose, granted, at) in enumerate(statements)])
    if not refused:
        return []
    purposes, granted, dates = zip(*(statements[error.row_number] for error in refused), strict=True)
    cursor.execute("""
        CREATE TEMP TABLE import_consent_refused ON COMMIT DROP AS
        SELECT * FROM unnest(%s::text[], %s::boolean[], %s::timestamptz[], %s::text[], %s::text[])
            AS r(purpose, granted, at, code, message)""",
                   [list(purposes), list(granted), list(dates), [e.code for e in refused], [e.message for e in refused]])
    cursor.execute("""
        DELETE FROM import_stage s USING import_consent_refused r
        WHERE s.consent_purpose = r.purpose AND s.consent_granted IS NOT DISTINCT FROM r.granted
          AND s.consent_at IS NOT DISTINCT FROM r.at
        RETURNING s.row_number, r.code, r.message, s.consent_purpose, s.consent_granted, s.consent_at""")
    lines = []
    for row_number, code, message, purpose, granted_value, at in cursor.fetchall():
        value = {"unknown_purpose": purpose, "invalid_granted": "" if granted_value is None else str(granted_value),
                 }.get(code, at.isoformat() if at else "")
        lines.append((row_number, headers.get(code, ""), value, f"consent: {message}"))
    return sorted(lines)


def erased_rows_reject(cursor, *, kind_headers: dict[str, str], consent_columns: bool) -> list[tuple]:
    """Remove rows naming an erased person's identifier from the stage; returns report lines
    (row, column, "", reason): the value itself is the erased person's and is not kept."""
    # import_ident holds each distinct (kind, hash) of the file once: one question per file.
    suppressed = suppressed_identifiers_staged(cursor, table="import_ident", kinds=list(kind_headers))
    if not suppressed:
        return []
    kinds, hashes = zip(*suppressed, strict=True)
    cursor.execute("CREATE TEMP TABLE import_erased ON COMMIT DROP AS SELECT kind, hash, false AS lifted "
                   "FROM unnest(%s::text[], %s::bytea[]) AS e(kind, hash)", [list(kinds), list(hashes)])
    if consent_columns:
        _lifts_mark(cursor)
    # Hash joins (no temp indexes): import_erased is small, the stage is read once.
    cursor.execute("""
        WITH hit AS (
            SELECT r.row_number, (array_agg(r.kind ORDER BY r.priority))[1] AS kind
            FROM import_row_ident r JOIN import_erased e ON e.kind = r.kind AND e.hash = r.hash
            WHERE NOT e.lifted GROUP BY r.row_number)
        DELETE FROM import_stage s USING hit WHERE s.row_number = hit.row_number
        RETURNING s.row_number, hit.kind""")
    lines = sorted((row, kind_headers.get(kind, ""), "", ERASED_REASON) for row, kind in cursor.fetchall())
    logger.info("import rows of erased people rejected", extra={"rows": len(lines), "identifiers": len(suppressed)})
    return lines


def _lifts_mark(cursor) -> None:
    """Suppressed identifiers the file grants consent for after the erasure are lifted."""
    cursor.execute("""
        SELECT e.kind, e.hash, max(s.consent_at) FROM import_erased e
        JOIN import_row_ident r ON r.kind = e.kind AND r.hash = e.hash JOIN import_stage s USING (row_number)
        WHERE s.consent_granted AND s.consent_purpose IS NOT NULL AND s.consent_at IS NOT NULL
        GROUP BY e.kind, e.hash""")
    lifted = import_suppression_lifts(decisions=[(kind, bytes(digest), at) for kind, digest, at in cursor.fetchall()])
    if lifted:
        kinds, hashes = zip(*lifted, strict=True)
        cursor.execute("UPDATE import_erased e SET lifted = true FROM unnest(%s::text[], %s::bytea[]) AS l(kind, hash) "
                       "WHERE e.kind = l.kind AND e.hash = l.hash", [list(kinds), list(hashes)])


@dataclass
class ConsentOutcome:
    recorded: int = 0
    unchanged: int = 0
    report: list[tuple] | None = None


def consents_record(cursor, *, kinds: list[str], job_id: int, actor, headers: dict[str, str]) -> ConsentOutcome:
    """Append the loaded rows' consent statements to the ledger, once per identifier the row
    carries (each identifier's decision is the person's, and lifts that identifier's suppression).
    Call it late: the ledger append holds its advisory lock until the import commits."""
    outcome = ConsentOutcome(report=[])
    hash_columns = sql.SQL(", ").join(sql.Identifier(f"{kind}_hash") for kind in kinds)
    statement = sql.SQL("""
        SELECT row_number, consent_purpose, consent_granted, consent_at, {}
        FROM import_stage WHERE consent_purpose IS NOT NULL AND consent_granted IS NOT NULL AND consent_at IS NOT NULL
        ORDER BY row_number""").format(hash_columns)
    # A server-side cursor: a big file's statements never all sit in the worker's memory.
    with cursor.connection.cursor(name="import_consents") as rows:
        rows.execute(statement)
        while batch := rows.fetchmany(RECORD_BATCH):
            statements = [
                ImportConsentRow(row_number, kind, "", purpose, granted, decided_at.isoformat(),
                                 identifier_hash=bytes(digest))
                for row_number, purpose, granted, decided_at, *digests in batch
                for kind, digest in zip(kinds, digests, strict=True) if digest is not None]
            result = consent_from_import_rows(rows=statements, actor=actor, import_reference=f"import {job_id}")
            outcome.recorded += result.recorded
            outcome.unchanged += result.unchanged
            # Checked per chunk already; only a purpose or mapping changed meanwhile gets here.
            outcome.report += [(error.row_number, headers.get(error.code, ""), "", f"consent: {error.message}")
                               for error in result.errors]
    return outcome


# --- statements kept before the ledger existed ------------------------------------------------

def _pending_table_exists(cursor) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [PENDING_TABLE])
    return cursor.fetchone()[0]


@transaction.atomic
def pending_consents_handover() -> dict[str, int]:
    """Move statements of the retired profiles_pendingconsent table into the ledger as their
    profile's decisions (source "import", dated as stated); returns counts by outcome."""
    counts = {"recorded": 0, "unchanged": 0, "refused": 0}
    with connection.cursor() as cursor:
        if not _pending_table_exists(cursor):
            return counts
        # Read with SQL: the model is gone. A merged profile's statements go to its survivor.
        cursor.execute(sql.SQL("""
            SELECT c.id, c.job_id, coalesce(p.merged_into_id, c.profile_id), c.purpose, c.granted, c.stated_at
            FROM {} c JOIN profiles_profile p ON p.id = c.profile_id
            WHERE c.handed_over_at IS NULL ORDER BY c.id FOR UPDATE OF c""").format(sql.Identifier(PENDING_TABLE)))
        pending = cursor.fetchall()
        by_job: dict = {}
        for row_id, job_id, profile_id, purpose, granted, stated_at in pending:
            by_job.setdefault(job_id, []).append(
                ImportConsentRow(row_id, "profile_id", str(profile_id), purpose, granted, stated_at.isoformat()))
        for job_id, statements in by_job.items():
            result = consent_from_import_rows(rows=statements, import_reference=f"import {job_id} (pending)")
            counts["recorded"] += result.recorded
            counts["unchanged"] += result.unchanged
            counts["refused"] += len(result.errors)
            for error in result.errors:  # ids and reason codes only
                logger.warning("pending consent refused by the ledger", extra={"pending_id": error.row_number,
                                                                               "code": error.code})
        cursor.execute(sql.SQL("UPDATE {} SET handed_over_at = now() WHERE handed_over_at IS NULL").format(
            sql.Identifier(PENDING_TABLE)))
    logger.info("pending consents handed over", extra=counts)
    return counts
