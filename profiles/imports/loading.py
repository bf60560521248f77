"""Loading: COPY cleaned rows into a staging table, then set-based SQL into profiles,
identities, links, traits and transactions; consent statements go to the ledger (consents.py).

Everything here runs inside the import's single transaction: the staging tables are temporary
(ON COMMIT DROP), and a failure, a cancel or a killed worker rolls the whole file back.
Identifiers are matched like ingestion matches them: normalised (profiles/identifiers.py) and
looked up on `profiles_identity (kind, value_hash)` (unique index identity_kind_value_uniq).
"""

import hashlib
import hmac
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from django.conf import settings
from django.db import IntegrityError
from psycopg import sql

from cdp import crypto
from profiles.identifiers import stored_value
from profiles.imports import consents
from profiles.imports import fields as F
from profiles.imports.digests import SHA256_KIND, email_digest
from profiles.imports.mapping import Plan
from profiles.imports.merging import merge_requests_submit
from profiles.imports.validation import CONSENT_ERROR_FIELD
from profiles.models import Identity

# Import field -> identity kind, in the order that picks a row's "customer key".
IDENTITY_KINDS = [("customer_id", Identity.Kind.CRM_ID), ("user_id", Identity.Kind.USER_ID),
                  ("email", Identity.Kind.EMAIL), ("phone", Identity.Kind.PHONE)]
NAME_FIELDS = ("first_name", "last_name")
TEXT_TRAITS = ("gender", "city", "postcode", "country", "income_band", "occupation", "language")
NUMBER_TRAITS = ("birth_year", "age")

_IDENTITY_COLUMNS = [col for _f, kind in IDENTITY_KINDS for col in (f"{kind}_hash", f"{kind}_value")]
COMMON_COLUMNS = ["row_number", "row_digest", *_IDENTITY_COLUMNS, "email_digest"]
STAGE_COLUMNS = {
    F.TRANSACTIONS: [*COMMON_COLUMNS, "order_id", "ts_us", "amount", "currency", "quantity", "product", "sku",
                     "category", "channel", "store"],
    F.CRM: [*COMMON_COLUMNS, "sha_digest", "first_name", "first_name_digest", "last_name", "last_name_digest",
            "birth_date", "birth_year", "age", *TEXT_TRAITS, "traits", "consent_purpose", "consent_granted",
            "consent_at"],
}
STAGE_COLUMNS[F.ENRICHMENT] = STAGE_COLUMNS[F.CRM]
# Stage columns that only a mapped field fills (any of those listed); the others always travel.
_SOURCE_FIELDS = {
    **{f"{kind}_{part}": (field,) for field, kind in IDENTITY_KINDS for part in ("hash", "value")},
    "email_digest": ("email",), "sha_digest": ("email_sha256",),
    **{name: (name,) for name in ("quantity", "product", "sku", "category", "store", *TEXT_TRAITS)},
    **{name: (name,) for name in NAME_FIELDS}, **{f"{name}_digest": (name,) for name in NAME_FIELDS},
    "birth_date": ("birth_date",), "birth_year": ("birth_date", "age"), "age": ("birth_date", "age"),
    "consent_purpose": ("consent_purpose",), "consent_granted": ("consent_purpose",),
    "consent_at": ("consent_purpose",),
}
DIGEST_CACHE_SIZE = 300_000  # identifiers whose hash the Stager remembers (~60 MB at most)
# Order times travel as microseconds since the epoch: formatting datetimes as text for COPY
# costs more than the rest of staging.
TS = "(timestamptz 'epoch' + s.ts_us * interval '1 microsecond')"
_TYPES = {"ts_us": "bigint", "row_number": "bigint", "row_digest": "bigint", "customer_key": "bytea", "email_digest": "bytea",
          "sha_digest": "bytea", "ts": "timestamptz", "amount": "numeric(14,2)", "quantity": "integer",
          "birth_date": "date", "birth_year": "smallint", "age": "smallint", "traits": "jsonb",
          "consent_granted": "boolean", "consent_at": "timestamptz"}


def session_prepare(cursor) -> None:
    """Give the session room for its staging tables, unless temp tables were used in it already
    (PostgreSQL then refuses a new temp_buffers; the import still works, spilling to disk), and
    its sorts and hashes room in memory for the rest of the transaction."""
    cursor.execute("SAVEPOINT import_temp_buffers")
    try:
        cursor.execute(sql.SQL("SET temp_buffers = {}").format(
            sql.Literal(f"{settings.CDP_IMPORT_TEMP_BUFFERS_MB}MB")))
    except psycopg.errors.InvalidParameterValue:
        cursor.execute("ROLLBACK TO SAVEPOINT import_temp_buffers")
    cursor.execute("RELEASE SAVEPOINT import_temp_buffers")
    cursor.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(f"{settings.CDP_IMPORT_WORK_MEM_MB}MB")))


def _column_type(name: str) -> str:
    return "bytea" if name.endswith("_hash") else _TYPES.get(name, "text")


@dataclass
class LoadResult:
    rows_loaded: int = 0
    rows_duplicate: int = 0
    profiles_matched: int = 0
    profiles_created: int = 0
    transactions_created: int = 0
    merge_pairs: int = 0
    consents: int = 0


def _hex(digest: bytes) -> str:
    return "\\x" + digest.hex()


_CSV_SPECIAL = ('"', ",", "\n", "\r")
_ARROW_WRITE = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


def csv_data(frame: pd.DataFrame) -> bytes | str:
    """The frame as CSV for COPY. Numbers, text and booleans go through Arrow's CSV writer (C++,
    five times csv_text's speed; it quotes every text value, and empty texts are made NULL first,
    as csv_text writes them); other columns (dates of CRM files) through csv_text."""
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return csv_text(frame)
    columns = []
    for column in table.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            column = pc.if_else(pc.equal(column, ""), pa.scalar(None, kind), column)
        elif not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                  or pa.types.is_null(kind)):
            return csv_text(frame)
        columns.append(column)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.table(columns, names=table.column_names), sink, write_options=_ARROW_WRITE)
    return sink.getvalue().to_pybytes()


def csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV lines for COPY, built a column at a time and joined once: pandas' to_csv
    formats cell by cell and took a third of staging. Missing and empty values both go as an
    unquoted empty field (NULL), as to_csv wrote them."""
    columns = [_csv_fields(frame[name]) for name in frame.columns]
    return "\n".join(map(",".join, zip(*columns, strict=True))) + "\n"


def _csv_fields(column: pd.Series) -> list[str]:
    kind = column.dtype.kind
    if not isinstance(column.dtype, np.dtype) and kind in ("i", "u"):  # nullable Int64
        texts = list(map(str, column.to_numpy(dtype=np.int64, na_value=0).tolist()))
        for position in np.flatnonzero(column.isna().to_numpy()):
            texts[position] = ""
        return texts
    values = column.tolist()
    if kind in ("i", "u"):
        return list(map(str, values))
    if kind == "f":
        return [repr(v) if v == v else "" for v in values]  # NaN != NaN
    # Missing: None, NaN, NaT (each unequal to itself) or pd.NA.
    texts = [v if type(v) is str else ("" if v is None or v is pd.NA or v != v else str(v)) for v in values]
    joined = "".join(texts)
    if any(special in joined for special in _CSV_SPECIAL):
        texts = [f'"{t.replace('"', '""')}"' if any(c in t for c in _CSV_SPECIAL) else t for t in texts]
    return texts


class _Abort(Exception):
    pass


class Stager:
    """Turns prepared chunks into staging rows and streams them into ONE COPY.

    The COPY runs in a writer thread fed through a small queue, so PostgreSQL ingests chunk n
    while pandas cleans chunk n+1 (two processes, two cores). Nothing else may use the
    connection until `close()`.
    """

    def __init__(self, cursor, plan: Plan):
        self.cursor = cursor
        self.plan = plan
        self.columns = STAGE_COLUMNS[plan.kind]
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_column_type(c))) for c in self.columns)
        # A row's customer key is its first identifier hash (IDENTITY_KINDS order, then the email
        # SHA-256 digest): PostgreSQL fills it in during the COPY, on the other core.
        keys = [sql.Identifier(f"{kind}_hash") for _f, kind in IDENTITY_KINDS]
        if "sha_digest" in self.columns:
            keys.append(sql.Identifier("sha_digest"))
        cursor.execute(sql.SQL("CREATE TEMP TABLE import_stage ({}, customer_key bytea GENERATED ALWAYS AS "
                               "(coalesce({})) STORED) ON COMMIT DROP").format(definition, sql.SQL(", ").join(keys)))
        self._digests: dict[str, dict[str, tuple[str, str]]] = {}
        # Only columns the mapping can fill travel (the others stay NULL): less to format and parse.
        self.columns = [c for c in self.columns if not (set(_SOURCE_FIELDS.get(c, ())) and
                                                       not set(_SOURCE_FIELDS[c]) & plan.targets)]
        if plan.kind == F.TRANSACTIONS:
            # Only lines sharing an order id are compared, so rejects_find digests just those
            # in SQL (_LINE_DIGEST); hashing every line here cost a tenth of staging.
            self.columns.remove("row_digest")
        self._copy_statement = sql.SQL("COPY import_stage ({}) FROM STDIN (FORMAT csv)").format(
            sql.SQL(", ").join(map(sql.Identifier, self.columns)))
        self.rows = 0
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="import-copy", daemon=True)
        self._thread.start()

    def _writer(self) -> None:
        try:
            with self.cursor.copy(self._copy_statement) as copy:
                while (data := self._queue.get()) is not None:
                    if data is _Abort:
                        raise _Abort()
                    copy.write(data)
        except BaseException as exc:  # handed to the main thread
            self._failure = exc
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def _put(self, item) -> None:
        if self._failure is not None and not isinstance(self._failure, _Abort):
            raise self._failure
        self._queue.put(item)

    def write(self, valid: pd.DataFrame) -> None:
        if valid.empty:
            return
        stage = self._stage_frame(valid)
        self._put(csv_data(stage))
        self.rows += len(stage)

    def close(self) -> None:
        """Finish the COPY (raises what went wrong in it)."""
        self._queue.put(None)
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_Abort)
            self._queue.put(None)
            self._thread.join(30)

    def _stage_frame(self, valid: pd.DataFrame) -> pd.DataFrame:
        plan = self.plan
        frame = valid.reset_index(drop=True)
        out = pd.DataFrame(index=frame.index)
        out["row_number"] = frame["row_number"]
        if "row_digest" in self.columns:
            mapped = [c for c in frame.columns if c != "row_number"]
            # Hash the typed values directly: casting to text first costs more than the hashing.
            out["row_digest"] = pd.util.hash_pandas_object(frame[mapped], index=False).astype(np.int64)
        for target, kind in IDENTITY_KINDS:
            if target in frame:
                out[f"{kind}_hash"], out[f"{kind}_value"] = self._identifiers(kind, frame[target])
        if "email" in frame:
            emails = frame["email"].fillna("")
            digests = {v: _hex(email_digest(v)) for v in emails.unique() if v}
            out["email_digest"] = emails.map(digests)
        if "email_sha256" in frame:
            shas = frame["email_sha256"].fillna("")
            digests = {v: _hex(crypto.keyed_hash(SHA256_KIND, v)) for v in shas.unique() if v}
            out["sha_digest"] = shas.map(digests)
        if plan.kind == F.TRANSACTIONS:
            self._transaction_columns(frame, out)
        else:
            self._profile_columns(frame, out)
        return out.reindex(columns=self.columns)

    def _identifiers(self, kind: str, column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Keyed hash (as COPY text) and stored value of each identifier of the column, remembered
        across chunks in a dict: a customer recurs in many chunks, and the HMAC was most of
        staging's Python time. (A pandas index as the cache cost more than the HMACs: every chunk's
        lookup converted and re-hashed the whole Arrow-backed index.) Python touches each distinct
        value once; numpy spreads the results over the rows (factorize codes; -1, a missing value,
        takes the trailing None)."""
        known = self._digests.setdefault(kind, {})
        codes, uniques = pd.factorize(column)
        distinct = uniques.tolist()
        if len(known) + len(distinct) > DIGEST_CACHE_SIZE:
            # Bounded (a 1 GB file may name millions of customers): keep this chunk's only.
            known = {v: known[v] for v in distinct if v in known}
            self._digests[kind] = known
        template = hmac.new(settings.CDP_HASH_KEY.encode(), digestmod=hashlib.sha256)
        hashes = np.empty(len(distinct) + 1, dtype=object)
        values = np.empty(len(distinct) + 1, dtype=object)
        for position, value in enumerate(distinct):
            if type(value) is not str or not value:
                continue
            pair = known.get(value)
            if pair is None:  # crypto.keyed_hash, from one keyed HMAC state copied (half the cost each)
                mac = template.copy()
                mac.update(f"{kind}:{value}".encode())
                pair = known[value] = ("\\x" + mac.hexdigest(), stored_value(kind, value))
            hashes[position], values[position] = pair
        return hashes[codes], values[codes]

    @staticmethod
    def _transaction_columns(frame, out) -> None:
        for name in ("order_id", "currency", "product", "sku", "category", "channel", "store"):
            if name in frame:
                out[name] = frame[name]
        out["ts_us"] = (frame["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
        out["amount"] = frame["amount"]
        if "quantity" in frame:
            out["quantity"] = frame["quantity"]

    def _profile_columns(self, frame, out) -> None:
        for name in NAME_FIELDS:
            if name in frame:
                column = frame[name].fillna("")
                out[name] = column.map(lambda v: crypto.encrypt(v) if v else None)
                out[f"{name}_digest"] = column.map(lambda v: crypto.keyed_hash_hex("name", v)[:32] if v else None)
        for name in TEXT_TRAITS:
            if name in frame:
                out[name] = frame[name]
        now = self.plan.now
        if "birth_date" in frame:
            birth = frame["birth_date"]
            out["birth_date"] = birth.dt.strftime("%Y-%m-%d")
            out["birth_year"] = birth.dt.year.astype("Int64")
            age = now.year - birth.dt.year - ((now.month, now.day) < (1, 1))
            before_birthday = (birth.dt.month > now.month) | ((birth.dt.month == now.month) & (birth.dt.day > now.day))
            out["age"] = (age - before_birthday.astype(int)).astype("Int64")
        if "age" in frame:
            given = frame["age"].astype("Int64")
            out["age"] = given if "age" not in out else out["age"].fillna(given)
            if "birth_year" not in out:
                out["birth_year"] = (now.year - given).astype("Int64")
        custom = [c for c in frame.columns if c.startswith(F.CUSTOM_PREFIX)]
        if custom:
            names = [c[len(F.CUSTOM_PREFIX):] for c in custom]
            records = frame[custom].fillna("").itertuples(index=False, name=None)
            out["traits"] = [orjson.dumps({k: v for k, v in zip(names, values, strict=True) if v}).decode()
                             for values in records]
        if "consent_purpose" in frame:
            stated = frame["consent_purpose"].fillna("") != ""
            out["consent_purpose"] = frame["consent_purpose"].where(stated)
            out["consent_granted"] = frame["consent_granted"].where(stated)
            if "consent_date" in frame:
                out["consent_at"] = frame["consent_date"].where(stated)


# --- the set-based part --------------------------------------------------------------------------

def _run(cursor, statement, params=None) -> int:
    cursor.execute(statement, params)
    return cursor.rowcount


def _line_digest(plan: Plan) -> sql.Composable:
    """What makes two staged transaction lines the same line: every cleaned value the mapping
    staged, identifiers by their keyed hash (their stored values are ciphertexts, a new nonce
    each), so equal lines of the file compare equal whichever chunk staged them."""
    columns = [c for c in STAGE_COLUMNS[F.TRANSACTIONS]
               if c not in ("row_number", "row_digest") and not c.endswith("_value")
               and (not _SOURCE_FIELDS.get(c) or set(_SOURCE_FIELDS[c]) & plan.targets)]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))


def rejects_find(cursor, plan: Plan) -> tuple[list[tuple], int]:
    """Rows the file contradicts itself on: exact duplicates (skipped) and, for transactions, an
    order id used for two customers or two currencies. Returns the report lines and the count of
    duplicates; the rows are removed from the stage."""
    if plan.kind == F.TRANSACTIONS:
        order_header = plan.header_of("order_id")
        # Only lines sharing an order id can be duplicates or conflicts. One hash aggregate finds
        # them (most exports repeat none), so the window functions below, two sorts each, see
        # only those lines instead of every line of the file.
        cursor.execute("""
            CREATE TEMP TABLE import_repeated ON COMMIT DROP AS
            SELECT order_id FROM import_stage GROUP BY order_id HAVING count(*) > 1""")
        cursor.execute("ANALYZE import_repeated")
        cursor.execute(sql.SQL("""
            CREATE TEMP TABLE import_rejects ON COMMIT DROP AS
            WITH ranked AS (
                SELECT row_number, order_id, currency, customer_key,
                       first_value(row_number) OVER (PARTITION BY order_id, {digest} ORDER BY row_number) AS same_as,
                       first_value(row_number) OVER w AS first_row,
                       first_value(customer_key) OVER w AS first_customer,
                       first_value(currency) OVER w AS first_currency
                FROM import_stage WHERE order_id IN (SELECT order_id FROM import_repeated)
                WINDOW w AS (PARTITION BY order_id ORDER BY row_number))
            SELECT row_number, order_id AS value,
                   CASE WHEN same_as <> row_number THEN 'duplicate of row ' || same_as || ' (skipped)'
                        WHEN first_customer IS DISTINCT FROM customer_key
                            THEN 'order id already used for another customer at row ' || first_row
                        ELSE 'order id already used with another currency at row ' || first_row END AS reason,
                   same_as <> row_number AS duplicate
            FROM ranked
            WHERE same_as <> row_number OR first_customer IS DISTINCT FROM customer_key
               OR first_currency IS DISTINCT FROM currency""").format(digest=_line_digest(plan)))
        column = order_header
    else:
        cursor.execute("""
            CREATE TEMP TABLE import_rejects ON COMMIT DROP AS
            SELECT row_number, NULL::text AS value, 'duplicate of row ' || same_as || ' (skipped)' AS reason,
                   true AS duplicate
            FROM (SELECT row_number, first_value(row_number) OVER (PARTITION BY row_digest ORDER BY row_number)
                         AS same_as FROM import_stage) d
            WHERE same_as <> row_number""")
        column = ""
    cursor.execute("ANALYZE import_rejects")
    cursor.execute("DELETE FROM import_stage s USING import_rejects r WHERE s.row_number = r.row_number")
    cursor.execute("ANALYZE import_stage")
    cursor.execute("SELECT row_number, value, reason, duplicate FROM import_rejects ORDER BY row_number")
    lines, duplicates = [], 0
    for row_number, value, reason, duplicate in cursor.fetchall():
        lines.append((row_number, column, value or "", reason))
        duplicates += bool(duplicate)
    return lines, duplicates


def identifiers_stage(cursor, plan: Plan) -> None:
    """Each row's identifiers (import_row_ident) and the file's distinct ones (import_ident)."""
    # Only the mapped kinds (the others' columns are NULL in every row): a file with one
    # identifier column makes one candidate per row, not four.
    kinds = [(position, kind) for position, (field, kind) in enumerate(IDENTITY_KINDS, start=1)
             if field in plan.targets] or list(enumerate((kind for _f, kind in IDENTITY_KINDS), start=1))
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {}, {})").format(
            sql.Literal(position), sql.Literal(kind), sql.Identifier(f"{kind}_hash"), sql.Identifier(f"{kind}_value"),
            sql.SQL("encode(s.email_digest, 'hex')") if kind == Identity.Kind.EMAIL else sql.SQL("NULL::text"))
        for position, kind in kinds)
    if plan.kind != F.TRANSACTIONS:
        values = sql.SQL("{}, (9, {}, s.sha_digest, NULL, NULL::text)").format(values, sql.Literal(SHA256_KIND))
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE import_row_ident ON COMMIT DROP AS
        SELECT s.row_number, v.priority, v.kind, v.hash, v.value, v.digest
        FROM import_stage s CROSS JOIN LATERAL (VALUES {}) AS v(priority, kind, hash, value, digest)
        WHERE v.hash IS NOT NULL""").format(values))
    # No indexes on these two: every join over them is a hash join of whole tables (building them
    # cost more than the joins that could use them).
    cursor.execute("ANALYZE import_row_ident")
    # GROUP BY (hash aggregate) instead of DISTINCT ON (a sort of every row). Any row's value
    # will do: for emails and phones each is a ciphertext of the same normalised identifier.
    cursor.execute("""
        CREATE TEMP TABLE import_ident ON COMMIT DROP AS
        SELECT kind, hash, min(value) AS value, min(digest) AS digest, min(row_number) AS first_row,
               NULL::bigint AS identity_id, NULL::uuid AS profile_id
        FROM import_row_ident GROUP BY kind, hash""")
    cursor.execute("ANALYZE import_ident")


def identities_resolve(cursor, plan: Plan) -> None:
    """Which existing profile each row belongs to (through any of its identifiers)."""
    identities_refresh(cursor)
    # Each row's profile: one its identifiers already belong to, else one another row of the same
    # customer (same customer key) matched, else a new profile per customer key (made up here,
    # created by profiles_create).
    cursor.execute("""
        CREATE TEMP TABLE import_row_match ON COMMIT DROP AS
        SELECT r.row_number, min(i.profile_id::text)::uuid AS profile_id
        FROM import_row_ident r JOIN import_ident i ON i.kind = r.kind AND i.hash = r.hash
        WHERE i.profile_id IS NOT NULL GROUP BY r.row_number""")
    cursor.execute("ANALYZE import_row_match")
    # A transactions file's first and last order per customer come along (the new profiles'
    # first and last seen): the grouping is done here once.
    seen = (sql.SQL("min(s.ts_us) AS first_us, max(s.ts_us) AS last_us") if plan.kind == F.TRANSACTIONS
            else sql.SQL("NULL::bigint AS first_us, NULL::bigint AS last_us"))
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE import_key ON COMMIT DROP AS
        SELECT s.customer_key, min(m.profile_id::text)::uuid AS matched, gen_random_uuid() AS fresh, {seen}
        FROM import_stage s LEFT JOIN import_row_match m USING (row_number) GROUP BY s.customer_key""").format(
        seen=seen))
    cursor.execute("ANALYZE import_key")
    cursor.execute("""
        CREATE TEMP TABLE import_target ON COMMIT DROP AS
        SELECT s.row_number, coalesce(m.profile_id, k.matched, k.fresh) AS profile_id,
               coalesce(m.profile_id, k.matched) IS NOT NULL AS matched
        FROM import_stage s LEFT JOIN import_row_match m USING (row_number)
             JOIN import_key k ON k.customer_key = s.customer_key""")
    cursor.execute("CREATE UNIQUE INDEX ON import_target (row_number)")
    # Temp tables have no statistics until analysed; without them the planner picks nested loops
    # over 10^5 x 10^5 rows.
    cursor.execute("ANALYZE import_target")


def identities_refresh(cursor) -> None:
    """Point staged identifiers at the identities (and live profiles) that hold them now."""
    cursor.execute("""
        UPDATE import_ident i SET identity_id = pi.id, profile_id = coalesce(pr.merged_into_id, pi.profile_id)
        FROM profiles_identity pi JOIN profiles_profile pr ON pr.id = pi.profile_id
        WHERE pi.kind = i.kind AND pi.value_hash = i.hash
          AND (i.identity_id IS NULL OR i.profile_id IS DISTINCT FROM coalesce(pr.merged_into_id, pi.profile_id))""")
    cursor.execute("""
        UPDATE import_ident i SET identity_id = d.identity_id, profile_id = coalesce(pr.merged_into_id, pi.profile_id)
        FROM profiles_emaildigest d JOIN profiles_identity pi ON pi.id = d.identity_id
             JOIN profiles_profile pr ON pr.id = pi.profile_id
        WHERE i.kind = %s AND d.digest_hash = i.hash AND i.identity_id IS NULL""", [SHA256_KIND])


def references_vouch(cursor, source_id: int) -> bool:
    """Lock what the import's new rows will reference and say whether the bulk inserts may skip
    PostgreSQL's per-row foreign-key checks (False: they run as usual, deferred to COMMIT).

    Every row the import inserts points at a profile, an identity's source, an order or the import's
    source, and each of those is either made in this transaction (invisible to other sessions, so
    none can delete it) or locked here FOR KEY SHARE, the lock each per-row check would take: the
    source, and the existing profiles rows matched (one statement, not one check per row). A
    matched profile deleted meanwhile fails the import like the checks would have. The per-row
    checks were about 3,000,000 for a 1,000,000-line file, about a quarter of its time.

    Skipping needs the right to set session_replication_role (a superuser, as the embedded server's,
    or PostgreSQL 15+ `GRANT SET ON PARAMETER session_replication_role TO <role>`)."""
    if cursor.connection.info.server_version < 150000:
        return False
    cursor.execute("SELECT has_parameter_privilege('session_replication_role', 'SET')")
    if not cursor.fetchone()[0]:
        return False
    cursor.execute("SELECT 1 FROM profiles_source WHERE id = %s FOR KEY SHARE", [source_id])
    if cursor.rowcount != 1:
        raise IntegrityError("the import's source was deleted during the import")
    # Primary key profiles_profile_pkey finds the matched profiles.
    cursor.execute("""
        SELECT (SELECT count(DISTINCT profile_id) FROM import_target WHERE matched),
               (SELECT count(*) FROM (SELECT 1 FROM profiles_profile p
                                      WHERE p.id IN (SELECT profile_id FROM import_target WHERE matched)
                                      FOR KEY SHARE OF p) locked)""")
    expected, locked = cursor.fetchone()
    if locked != expected:
        raise IntegrityError("a profile the file matched was deleted during the import")
    return True


@contextmanager
def row_checks_skipped(cursor, vouched: bool):
    """Run the block's inserts without per-row trigger work (foreign-key checks) when
    `references_vouch` vouched for what they reference; SET LOCAL, so a rollback restores it too."""
    if not vouched:
        yield
        return
    cursor.execute("SELECT current_setting('session_replication_role')")
    previous = cursor.fetchone()[0]
    cursor.execute("SET LOCAL session_replication_role = replica")
    try:
        yield
    finally:
        # Also on an error: a caller that recovers (a savepoint) must not go on writing without
        # the checks, e.g. into the consent ledger whose append-only trigger this role skips too.
        if cursor.connection.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
            cursor.execute(sql.SQL("SET LOCAL session_replication_role = {}").format(sql.Literal(previous)))


def unmatched_reject(cursor, plan: Plan) -> list[tuple]:
    """Enrichment never creates people: rows matching no profile go to the report."""
    cursor.execute("""
        DELETE FROM import_target WHERE NOT matched RETURNING row_number""")
    rows = sorted(r[0] for r in cursor.fetchall())
    if rows:
        cursor.execute("DELETE FROM import_stage WHERE row_number = ANY(%s)", [rows])
    return [(row, "", "", "no existing profile has this email, email hash or customer id") for row in rows]


def profiles_create(cursor, plan: Plan, source_id: int) -> int:
    """One new profile per customer key among rows that matched nobody."""
    cursor.execute("""
        CREATE TEMP TABLE import_new ON COMMIT DROP AS
        SELECT customer_key, fresh AS profile_id FROM import_key WHERE matched IS NULL AND customer_key IS NOT NULL""")
    # Rows of a customer key that matched nobody all go to its fresh profile (identities_resolve),
    # so import_key already holds each new profile's first and last order.
    epoch = "timestamptz 'epoch' + k.{} * interval '1 microsecond'"
    seen = epoch.format("first_us") if plan.kind == F.TRANSACTIONS else "now()"
    last = epoch.format("last_us") if plan.kind == F.TRANSACTIONS else "now()"
    created = _run(cursor, sql.SQL("""
        INSERT INTO profiles_profile (id, created_at, updated_at, first_seen_at, last_seen_at, gender, country, city,
            postcode, income_band, language, occupation, last_device_type, last_os, last_browser, traits)
        SELECT k.fresh, now(), now(), {}, {}, '', '', '', '', '', '', '', '', '', '', '{{}}'::jsonb
        FROM import_key k WHERE k.matched IS NULL AND k.customer_key IS NOT NULL""").format(sql.SQL(seen),
                                                                                             sql.SQL(last)))
    return created


def identities_insert(cursor, source_id: int, *, several_per_row: bool = True, emails: bool = True,
                      vouched: bool = False) -> list[tuple]:
    """Insert new identities, link each row's identifiers (rule crm_row), and return the pairs of
    different existing profiles that one row joins (to be merged). With one identifier column
    (`several_per_row` False) no row can link or join anything: those passes are skipped, and
    without emails (no digests to write) so is reading the new identities' ids back. `vouched`:
    see references_vouch (the identities point at the import's profiles and source)."""
    with row_checks_skipped(cursor, vouched):
        _insert_absent(cursor, sql.SQL("""
            INSERT INTO profiles_identity (profile_id, kind, value_hash, value, source_id, first_seen_at, last_seen_at)
            SELECT t.profile_id, i.kind, i.hash, i.value, %s, now(), now()
            FROM import_ident i JOIN import_target t ON t.row_number = i.first_row
            WHERE i.identity_id IS NULL AND i.kind <> %s"""), "(kind, value_hash)", [source_id, SHA256_KIND])
    if not several_per_row and not emails:
        return []
    identities_refresh(cursor)
    cursor.execute("""
        INSERT INTO profiles_emaildigest (identity_id, digest_hash)
        SELECT identity_id, decode(digest, 'hex') FROM import_ident
        WHERE kind = %s AND digest IS NOT NULL AND identity_id IS NOT NULL
        ON CONFLICT (identity_id) DO NOTHING""", [Identity.Kind.EMAIL])
    if not several_per_row:
        return []
    # Star edges: each row's first identifier (by priority) to each of its others. Grouping per
    # row (no self-join) keeps this linear in the rows.
    cursor.execute("""
        INSERT INTO profiles_identitylink (identity_a_id, identity_b_id, rule, source_id, first_seen_at, last_seen_at,
                                           is_active, deactivation_reason)
        SELECT DISTINCT least(g.ids[1], other.id), greatest(g.ids[1], other.id), 'crm_row', %s, now(), now(), true, ''
        FROM (SELECT array_agg(i.identity_id ORDER BY ri.priority) AS ids
              FROM import_row_ident ri JOIN import_ident i ON i.kind = ri.kind AND i.hash = ri.hash
              WHERE ri.kind <> %s AND i.identity_id IS NOT NULL
              GROUP BY ri.row_number HAVING count(*) > 1) g
             CROSS JOIN LATERAL unnest(g.ids[2:]) AS other(id)
        WHERE other.id <> g.ids[1]
        ON CONFLICT (identity_a_id, identity_b_id, rule) DO NOTHING""", [source_id, SHA256_KIND])
    cursor.execute("""
        SELECT DISTINCT least(t.profile_id::text, i.profile_id::text)::uuid, greatest(t.profile_id::text,
               i.profile_id::text)::uuid
        FROM import_row_ident r JOIN import_ident i ON i.kind = r.kind AND i.hash = r.hash
             JOIN import_target t ON t.row_number = r.row_number
        WHERE i.profile_id IS NOT NULL AND i.profile_id <> t.profile_id""")
    return cursor.fetchall()


def traits_update(cursor, plan: Plan, source_id: int, authoritative: bool) -> None:
    """Upsert profile traits: in a file the last non-empty value wins; against the database the
    import's non-empty value wins unless an authoritative source set the field and this source is
    not authoritative. Unchanged profiles are not rewritten (re-importing changes nothing)."""
    present = set(STAGE_COLUMNS[plan.kind])
    mapped = plan.targets
    fields = [f for f in (*NAME_FIELDS, *TEXT_TRAITS, *NUMBER_TRAITS)
              if f in mapped or (f in NUMBER_TRAITS and {"age", "birth_date"} & mapped)]
    if not fields and not any(t.startswith(F.CUSTOM_PREFIX) for t in mapped) and "birth_date" not in mapped:
        return
    last_value = "(array_agg(s.{c} ORDER BY s.row_number DESC) FILTER (WHERE s.{c} IS NOT NULL))[1] AS {c}"
    aggregates = [sql.SQL(last_value).format(c=sql.Identifier(f)) for f in fields]
    for name in NAME_FIELDS:
        if name in fields:
            aggregates.append(sql.SQL(last_value).format(c=sql.Identifier(f"{name}_digest")))
    if "birth_date" in mapped:
        aggregates.append(sql.SQL(last_value).format(c=sql.Identifier("birth_date")))
    aggregates.append(sql.SQL("""coalesce((SELECT jsonb_object_agg(e.key, e.value ORDER BY x.row_number)
        FROM import_stage x JOIN import_target y USING (row_number), jsonb_each(coalesce(x.traits, '{}')) e
        WHERE y.profile_id = t.profile_id), '{}'::jsonb) AS custom""") if "traits" in present and any(
        c.startswith(F.CUSTOM_PREFIX) for c in mapped) else sql.SQL("'{}'::jsonb AS custom"))
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE import_traits ON COMMIT DROP AS
        SELECT t.profile_id, {} FROM import_stage s JOIN import_target t USING (row_number)
        GROUP BY t.profile_id""").format(sql.SQL(", ").join(aggregates)))
    cursor.execute("ANALYZE import_traits")
    if "birth_date" in mapped:
        cursor.execute("""UPDATE import_traits SET custom = custom || jsonb_build_object('birth_date', birth_date)
                          WHERE birth_date IS NOT NULL""")
    # May this source write field f of this profile? (authoritative sources always may)
    allowed = ("(%(authoritative)s OR NOT coalesce((prov.fields->>{key})::bigint = ANY(%(authoritative_ids)s), false))")
    settings_parts, new_parts, old_parts, provenance_parts = [], [], [], []
    for name in fields:
        key = sql.Literal(name)
        may = sql.SQL(allowed).format(key=key)
        if name in NAME_FIELDS:
            digest_key = sql.Literal(f"{name}#")
            # Names are ciphertext (a new nonce each time): compare keyed digests, keep the old
            # ciphertext when the name did not change.
            new_value = sql.SQL(
                "CASE WHEN n.{c} IS NOT NULL AND {may} AND (prov.fields->>{dk}) IS DISTINCT FROM n.{d} "
                "THEN n.{c} ELSE p.{c} END").format(c=sql.Identifier(name), may=may, dk=digest_key,
                                                   d=sql.Identifier(f"{name}_digest"))
            provenance_parts.append(sql.SQL(
                "CASE WHEN n.{c} IS NOT NULL AND {may} THEN jsonb_build_object({k}, %(source)s, {dk}, n.{d}) "
                "ELSE '{{}}'::jsonb END").format(c=sql.Identifier(name), may=may, k=key, dk=digest_key,
                                                 d=sql.Identifier(f"{name}_digest")))
        else:
            new_value = sql.SQL("CASE WHEN n.{c} IS NOT NULL AND {may} THEN n.{c} ELSE p.{c} END").format(
                c=sql.Identifier(name), may=may)
            provenance_parts.append(sql.SQL(
                "CASE WHEN n.{c} IS NOT NULL AND {may} THEN jsonb_build_object({k}, %(source)s) "
                "ELSE '{{}}'::jsonb END").format(c=sql.Identifier(name), may=may, k=key))
        settings_parts.append(sql.SQL("{c} = x.{c}").format(c=sql.Identifier(name)))
        new_parts.append(sql.SQL("{} AS {}").format(new_value, sql.Identifier(name)))
        old_parts.append(sql.SQL("p.{} AS {}").format(sql.Identifier(name), sql.Identifier(f"old_{name}")))
    custom_allowed = sql.SQL("""(SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
        FROM jsonb_each(n.custom) e WHERE {may})""").format(may=sql.SQL(allowed).format(
        key=sql.SQL("('traits.' || e.key)")))
    new_parts.append(sql.SQL("p.traits || {} AS traits").format(custom_allowed))
    settings_parts.append(sql.SQL("traits = x.traits"))
    old_parts.append(sql.SQL("p.traits AS old_traits"))
    provenance_parts.append(sql.SQL("""(SELECT coalesce(jsonb_object_agg('traits.' || e.key, %(source)s), '{{}}'::jsonb)
        FROM jsonb_each(n.custom) e WHERE {may})""").format(may=sql.SQL(allowed).format(
        key=sql.SQL("('traits.' || e.key)"))))
    params = {"authoritative": authoritative, "authoritative_ids": _authoritative_sources(cursor), "source": source_id}
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE import_profile_new ON COMMIT DROP AS
        SELECT p.id, {new}, {old}, {provenance} AS provenance
        FROM profiles_profile p JOIN import_traits n ON n.profile_id = p.id
             LEFT JOIN profiles_traitprovenance prov ON prov.profile_id = p.id""").format(
        new=sql.SQL(", ").join(new_parts), old=sql.SQL(", ").join(old_parts),
        provenance=sql.SQL(" || ").join(provenance_parts)), params)
    new_row = sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(n)) for n in [*fields, "traits"])
    old_row = sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(f"old_{n}")) for n in [*fields, "traits"])
    cursor.execute(sql.SQL("""
        UPDATE profiles_profile p SET {sets}, updated_at = now()
        FROM import_profile_new x WHERE p.id = x.id AND ROW({old_row}) IS DISTINCT FROM ROW({new_row})""").format(
        sets=sql.SQL(", ").join(settings_parts), new_row=new_row, old_row=old_row))
    cursor.execute("""
        INSERT INTO profiles_traitprovenance (profile_id, fields)
        SELECT id, provenance FROM import_profile_new WHERE provenance <> '{}'::jsonb
        ON CONFLICT (profile_id) DO UPDATE SET fields = profiles_traitprovenance.fields || EXCLUDED.fields
        WHERE profiles_traitprovenance.fields IS DISTINCT FROM profiles_traitprovenance.fields || EXCLUDED.fields""")


def _authoritative_sources(cursor) -> list[int]:
    cursor.execute("SELECT id FROM profiles_source WHERE is_authoritative")
    return [row[0] for row in cursor.fetchall()]


def _insert_absent(cursor, statement: sql.Composable, unique: str, params: list) -> int:
    """Run an INSERT … SELECT of rows just checked absent from a unique index; returns the rows
    inserted. Plain first: with ON CONFLICT every row is a speculative insertion (one more index
    probe and WAL record each). Should a concurrent writer have inserted one of them meanwhile,
    the plain insert fails on the unique index and runs again skipping those (DO NOTHING)."""
    cursor.execute("SAVEPOINT import_insert")
    try:
        cursor.execute(statement, params)
    except psycopg.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT import_insert")
        cursor.execute(sql.SQL("{} ON CONFLICT {} DO NOTHING").format(statement, sql.SQL(unique)), params)
    inserted = cursor.rowcount
    cursor.execute("RELEASE SAVEPOINT import_insert")
    return inserted


def _orders_select(cursor) -> tuple[sql.Composable, bool]:
    """The file's orders (rows sharing an order id are its lines) and whether any has several lines.
    import_repeated (rejects_find) holds the order ids the file repeats, before rejects were removed."""
    cursor.execute("""SELECT EXISTS (SELECT 1 FROM import_stage s JOIN import_repeated r USING (order_id)
                                     GROUP BY s.order_id HAVING count(*) > 1)""")
    if cursor.fetchone()[0]:
        return sql.SQL("""
            SELECT s.order_id, min(t.profile_id::text)::uuid AS profile_id, sum(s.amount) AS amount,
                   min(s.currency) AS currency, min(s.channel) AS channel, coalesce(min(s.store), '') AS store,
                   min({ts}) AS ts
            FROM import_stage s JOIN import_target t USING (row_number) GROUP BY s.order_id
            ORDER BY min(s.row_number)""").format(ts=sql.SQL(TS)), True
    # One line per order (the common export): no aggregation, and the line's item travels along.
    return sql.SQL("""
        SELECT s.order_id, t.profile_id, s.amount, s.currency, s.channel, coalesce(s.store, '') AS store, {ts} AS ts,
               s.sku, s.product, s.category, s.quantity
        FROM import_stage s JOIN import_target t USING (row_number) ORDER BY s.row_number""").format(
        ts=sql.SQL(TS)), False


def transactions_insert(cursor, source_id: int, *, vouched: bool = False) -> int:
    """Orders the source does not hold yet, with one item per line; returns how many were new.

    Each new order draws its id from the table's sequence here, so its items are written from the
    same temp table: no RETURNING round trip and no join back on order ids. Orders go in file order
    (exports list them by order id): random order costs a third more in index maintenance.
    `vouched`: see references_vouch (orders point at the import's profiles and source, items at
    the orders made here)."""
    orders, multi_line = _orders_select(cursor)
    # The sequence is looked up once: pg_get_serial_sequence() in the select list ran per row.
    cursor.execute("SELECT pg_get_serial_sequence('profiles_transaction', 'id')")
    sequence = cursor.fetchone()[0]
    # Index transaction_source_order_uniq (source_id, order_id) finds orders imported before.
    cursor.execute(sql.SQL("""
        CREATE TEMP TABLE import_orders ON COMMIT DROP AS
        SELECT nextval({sequence}::regclass) AS id, o.*
        FROM ({orders}) o
        WHERE NOT EXISTS (SELECT 1 FROM profiles_transaction x WHERE x.source_id = %s AND x.order_id = o.order_id)
        """).format(orders=orders, sequence=sql.Literal(sequence)), [source_id])
    new_orders = cursor.rowcount
    with row_checks_skipped(cursor, vouched):
        inserted = _insert_absent(cursor, sql.SQL("""
            INSERT INTO profiles_transaction (id, source_id, order_id, profile_id, amount, currency, channel, store,
                                              timestamp, created_at)
            SELECT id, %s, order_id, profile_id, amount, currency, channel, store, ts, now() FROM import_orders"""),
            "(source_id, order_id)", [source_id])
    if inserted < new_orders:  # another writer of this source took some order ids meanwhile
        cursor.execute("DELETE FROM import_orders o WHERE NOT EXISTS "
                       "(SELECT 1 FROM profiles_transaction x WHERE x.id = o.id)")
        new_orders -= cursor.rowcount
    with row_checks_skipped(cursor, vouched):
        _items_insert(cursor, multi_line)
    return new_orders


def _items_insert(cursor, multi_line: bool) -> None:
    if multi_line:
        cursor.execute("ANALYZE import_orders")
        cursor.execute("""
            INSERT INTO profiles_transactionitem (transaction_id, product_sku, product_name, category, price, quantity)
            SELECT o.id, coalesce(s.sku, ''), coalesce(s.product, ''), coalesce(s.category, ''),
                   round(s.amount / greatest(coalesce(s.quantity, 1), 1), 2), coalesce(s.quantity, 1)
            FROM import_orders o JOIN import_stage s ON s.order_id = o.order_id
            WHERE s.sku IS NOT NULL OR s.product IS NOT NULL OR s.category IS NOT NULL""")
    else:
        cursor.execute("""
            INSERT INTO profiles_transactionitem (transaction_id, product_sku, product_name, category, price, quantity)
            SELECT id, coalesce(sku, ''), coalesce(product, ''), coalesce(category, ''),
                   round(amount / greatest(coalesce(quantity, 1), 1), 2), coalesce(quantity, 1)
            FROM import_orders WHERE sku IS NOT NULL OR product IS NOT NULL OR category IS NOT NULL""")


def touched_profile_batches(connection, batch: int):
    """Profiles that got new orders, `batch` ids at a time, through a server-side cursor (a big
    import touches millions; they never all sit in the worker's memory)."""
    with connection.cursor(name="import_touched") as cursor:
        cursor.execute("SELECT DISTINCT profile_id::text FROM import_orders")
        while rows := cursor.fetchmany(batch):
            yield [row[0] for row in rows]


def counts(cursor) -> tuple[int, int, int]:
    """(rows loaded, existing profiles matched, new profiles)."""
    cursor.execute("""SELECT count(*), count(DISTINCT profile_id) FILTER (WHERE matched),
                             (SELECT count(*) FROM import_new) FROM import_target""")
    return cursor.fetchone()


def _identifiers_without_erased(cursor, plan: Plan) -> list[tuple]:
    """Stage the file's identifiers, leaving out rows that name an erased person."""
    identifiers_stage(cursor, plan)
    kind_headers = {kind: plan.header_of(field) or "" for field, kind in IDENTITY_KINDS}
    erased = consents.erased_rows_reject(cursor, kind_headers=kind_headers,
                                         consent_columns="consent_purpose" in plan.targets)
    if erased:  # rare: build the identifier tables again without those rows
        cursor.execute("DROP TABLE import_row_ident, import_ident")
        identifiers_stage(cursor, plan)
    return erased


def _consent_headers(plan: Plan) -> dict[str, str]:
    """Consent error code -> the file column it is about."""
    return {code: plan.header_of(field) or "" for code, field in CONSENT_ERROR_FIELD.items()}


def _consents_record(cursor, plan: Plan, job_id: int, actor, result: LoadResult) -> list[tuple]:
    outcome = consents.consents_record(cursor, kinds=[kind for _f, kind in IDENTITY_KINDS], job_id=job_id,
                                       actor=actor, headers=_consent_headers(plan))
    result.consents = outcome.recorded
    return outcome.report


def load(cursor, plan: Plan, *, job_id: int, source_id: int, authoritative: bool, actor, on_phase) -> tuple[
        LoadResult, list[tuple]]:
    """Everything after staging; returns the result and the extra report lines (SQL-found rejects)."""
    result = LoadResult()
    on_phase("checking duplicates")
    report, result.rows_duplicate = rejects_find(cursor, plan)
    if "consent_purpose" in plan.targets:
        report += consents.consent_rows_reject(cursor, headers=_consent_headers(plan))
    on_phase("matching identities")
    report += _identifiers_without_erased(cursor, plan)
    identities_resolve(cursor, plan)
    if plan.kind == F.ENRICHMENT:
        report += unmatched_reject(cursor, plan)
        cursor.execute("CREATE TEMP TABLE import_new ON COMMIT DROP AS SELECT NULL::bytea AS customer_key, "
                       "NULL::uuid AS profile_id LIMIT 0")
    vouched = references_vouch(cursor, source_id)
    if plan.kind != F.ENRICHMENT:
        on_phase("creating profiles")
        with row_checks_skipped(cursor, vouched):
            result.profiles_created = profiles_create(cursor, plan, source_id)
    identifier_columns = {field for field, _kind in IDENTITY_KINDS} | {"email_sha256"}
    pairs = identities_insert(cursor, source_id, several_per_row=len(identifier_columns & plan.targets) > 1,
                              emails="email" in plan.targets, vouched=vouched)
    result.merge_pairs = merge_requests_submit(pairs=pairs, job_id=job_id)
    if plan.kind == F.TRANSACTIONS:
        on_phase("loading transactions")
        result.transactions_created = transactions_insert(cursor, source_id, vouched=vouched)
    else:
        on_phase("updating traits")
        traits_update(cursor, plan, source_id, authoritative)
    if "consent_purpose" in plan.targets:  # late: the ledger's lock is held until COMMIT
        on_phase("recording consent")
        report += _consents_record(cursor, plan, job_id, actor, result)
    on_phase("finishing")
    result.rows_loaded, result.profiles_matched, _ = counts(cursor)
    return result, report
