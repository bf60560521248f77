"""Map, clean and validate one chunk of rows. Invalid rows never stop the file: each problem
becomes a line of the error report (row, column, value, reason) and only that row is left out."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from consent.services.inputs import ImportConsentRow, consent_import_rows_check
from profiles.imports import cleaning as C
from profiles.imports import fields as F
from profiles.imports.formats import Chunk
from profiles.imports.mapping import Plan

ERROR_COLUMNS = ["row_number", "column", "value", "reason"]
FUTURE_TOLERANCE = pd.Timedelta(days=1)  # time zones: "today" somewhere is tomorrow in UTC


@dataclass
class Prepared:
    frame: pd.DataFrame  # row_number + one column per target field, cleaned
    rejected: np.ndarray  # bool per row of frame
    errors: pd.DataFrame  # ERROR_COLUMNS
    blank_rows: int

    @property
    def valid(self) -> pd.DataFrame:
        return self.frame[~self.rejected]


class _Errors:
    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.parts: list[pd.DataFrame] = []
        self.rejected = np.zeros(len(rows), dtype=bool)

    def add(self, mask: np.ndarray, column: str, values, reason) -> None:
        if not mask.any():
            return
        index = np.flatnonzero(mask)
        value_array = np.asarray(values, dtype=object)[index] if not isinstance(values, str) else values
        reason_array = np.asarray(reason, dtype=object)[index] if not isinstance(reason, str) else reason
        self.parts.append(pd.DataFrame({"row_number": self.rows[index], "column": column,
                                        "value": value_array, "reason": reason_array}))
        self.rejected |= mask

    def frame(self, extra: list[tuple[int, str, str, str]]) -> pd.DataFrame:
        parts = list(self.parts)
        if extra:
            parts.append(pd.DataFrame(extra, columns=ERROR_COLUMNS))
        if not parts:
            return pd.DataFrame(columns=ERROR_COLUMNS)
        return pd.concat(parts, ignore_index=True).sort_values("row_number", kind="stable")


def _clean_column(target: str, raw: pd.Series, plan: Plan) -> tuple[C.Cleaned, pd.Series | None]:
    """Clean one mapped column by its field type; also a currency read off amounts."""
    if target.startswith(F.CUSTOM_PREFIX):
        return C.clean_text(raw, 1000), None
    spec = F.fields_for(plan.kind)[target]
    kind = spec.type
    if kind == "email":
        return C.clean_email(raw), None
    if kind == "phone":
        return C.clean_phone(raw, plan.phone_region), None
    if kind == "id":
        return C.clean_identifier(raw, spec.max_length), None
    if kind == "sha256":
        return C.clean_sha256(raw), None
    if kind in ("date", "datetime"):
        return C.clean_dates(raw, plan.date_format), None
    if kind == "amount":
        return C.clean_amounts(raw, plan.decimal_comma)
    if kind == "int":
        return C.clean_integers(raw), None
    if kind == "currency":
        return C.clean_currency(raw), None
    if kind == "country":
        return C.clean_country(raw), None
    if kind == "bool":
        return C.clean_bool(raw), None
    if kind == "purpose":  # whether the purpose is known is the consent app's call (_check_consent)
        return C.clean_label(raw, plan.label_maps.get(target, {}), 60), None
    if kind == "category":
        return C.clean_label(raw, plan.label_maps.get(target, {}), spec.max_length), None
    return C.clean_text(raw, spec.max_length), None


def chunk_prepare(chunk: Chunk, plan: Plan, *, consent_check: bool = False) -> Prepared:
    """Clean and validate a chunk; the frame keeps every non-blank row, `rejected` marks the bad ones.

    `consent_check` also applies the consent ledger's rules to consent columns (the preview). It
    reads the database, so an import, whose COPY holds the connection while chunks are prepared,
    checks them set-based after staging instead (consents.consent_rows_reject)."""
    raw = chunk.frame
    trimmed = {header: C.trim(raw[header]) for header in plan.columns}
    if trimmed:
        nonblank = np.logical_or.reduce([C.present(s) for s in trimmed.values()])
    else:
        nonblank = np.zeros(len(raw), dtype=bool)
    blank_rows = int((~nonblank).sum())
    rows = chunk.row_numbers[nonblank]
    trimmed = {h: s[nonblank].reset_index(drop=True) for h, s in trimmed.items()}
    errors = _Errors(rows)
    out: dict[str, object] = {"row_number": rows}
    symbol_currency = None
    for header, target in plan.columns.items():
        cleaned, currency = _clean_column(target, trimmed[header], plan)
        errors.add(cleaned.bad, header, trimmed[header], cleaned.reason)
        out[target] = cleaned.values
        if currency is not None:
            symbol_currency = currency
    frame = pd.DataFrame(out)
    _check_meaning(frame, trimmed, plan, errors, symbol_currency)
    if consent_check and {"consent_purpose", "consent_granted"} <= set(frame):
        _check_consent(frame, trimmed, plan, errors)
    bad_lines = [(row, "", "", f"malformed CSV line: {reason}") for row, reason in chunk.bad_lines]
    return Prepared(frame, errors.rejected.copy(), errors.frame(bad_lines), blank_rows)


def _missing(frame: pd.DataFrame, target: str) -> np.ndarray:
    if target not in frame:
        return np.ones(len(frame), dtype=bool)
    column = frame[target]
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        return (column.fillna("") == "").to_numpy()
    return column.isna().to_numpy()


def _check_meaning(frame, trimmed, plan: Plan, errors: _Errors, symbol_currency) -> None:
    kind, now = plan.kind, plan.now
    header = plan.header_of
    identifiers = [f for f in F.identifier_fields(kind) if f in frame]
    no_identifier = np.logical_and.reduce([_missing(frame, f) for f in identifiers]) if identifiers else \
        np.ones(len(frame), dtype=bool)
    # Rows whose identifier was present but malformed already carry that reason.
    errors.add(no_identifier & ~errors.rejected, "", "",
               "missing identifier: the row names no customer (" +
               ", ".join(F.field_label(kind, f) for f in F.identifier_fields(kind)) + ")")
    for required in F.required_fields(kind):
        if required in frame:
            errors.add(_missing(frame, required) & ~errors.rejected, header(required), "",
                       f"missing {F.field_label(kind, required).lower()}")
    if "age" in frame:
        age = frame["age"]
        errors.add(((age < 0) | (age > 120)).fillna(False).to_numpy(dtype=bool), header("age"),
                   trimmed[header("age")], "impossible age (must be between 0 and 120)")
    if "birth_date" in frame:
        birth = frame["birth_date"]
        errors.add((birth > now + FUTURE_TOLERANCE).fillna(False).to_numpy(dtype=bool), header("birth_date"),
                   trimmed[header("birth_date")], "birth date in the future")
        errors.add((birth < now - pd.DateOffset(years=121)).fillna(False).to_numpy(dtype=bool),
                   header("birth_date"), trimmed[header("birth_date")], "impossible birth date (over 120 years ago)")
    for target in ("timestamp", "consent_date"):
        if target in frame:
            when = frame[target]
            errors.add((when > now + FUTURE_TOLERANCE).fillna(False).to_numpy(dtype=bool), header(target),
                       trimmed[header(target)], "date in the future")
            errors.add((when < pd.Timestamp("1900-01-01", tz="UTC")).fillna(False).to_numpy(dtype=bool),
                       header(target), trimmed[header(target)], "date before 1900")
    if "quantity" in frame:
        errors.add((frame["quantity"] < 0).fillna(False).to_numpy(dtype=bool), header("quantity"),
                   trimmed[header("quantity")], "negative quantity")
    if kind == F.TRANSACTIONS:
        _check_transaction(frame, trimmed, plan, errors, symbol_currency)
    if {"consent_purpose", "consent_granted"} <= set(frame):
        stated = ~_missing(frame, "consent_purpose") | ~_missing(frame, "consent_granted")
        for target in ("consent_purpose", "consent_granted", "consent_date"):
            errors.add(stated & _missing(frame, target) & ~errors.rejected, header(target) or "",
                       "", f"missing {F.field_label(kind, target).lower()} (consent needs purpose, granted and date)")


# Which column a consent input error code (consent.services.inputs) is about.
CONSENT_ERROR_FIELD = {"unknown_purpose": "consent_purpose", "invalid_granted": "consent_granted",
                        "invalid_date": "consent_date", "future_date": "consent_date"}


def _check_consent(frame, trimmed, plan: Plan, errors: _Errors) -> None:
    """The consent ledger's own checks of purpose, granted and date, so a statement it would
    refuse rejects its row before anything of the row loads. They do not depend on who the row
    names, so each distinct (purpose, granted, date) is checked once."""
    stated = ~_missing(frame, "consent_purpose") & ~errors.rejected
    if not stated.any() or "consent_date" not in frame:  # without a date the row was rejected already
        return
    statements = pd.DataFrame({
        "purpose": frame["consent_purpose"].astype(str),
        "granted": frame["consent_granted"].map({"t": "true", "f": "false"}).fillna(""),
        "date": frame["consent_date"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").fillna(""),
    })[stated]
    distinct = statements.drop_duplicates().reset_index(drop=True)
    checked = consent_import_rows_check(rows=[
        ImportConsentRow(position, "", "", purpose, granted, date)
        for position, (purpose, granted, date) in enumerate(distinct.itertuples(index=False, name=None))])
    if not checked:
        return
    verdicts = distinct.iloc[[e.row_number for e in checked]].assign(
        code=[e.code for e in checked], message=[e.message for e in checked])
    judged = statements.reset_index().merge(verdicts, on=["purpose", "granted", "date"], how="left")
    for (code, message), group in judged.dropna(subset=["code"]).groupby(["code", "message"]):
        header = plan.header_of(CONSENT_ERROR_FIELD.get(code, "consent_purpose")) or ""
        mask = np.zeros(len(frame), dtype=bool)
        mask[group["index"].to_numpy()] = True
        errors.add(mask, header, trimmed.get(header, ""), f"consent: {message}")


def _check_transaction(frame, trimmed, plan: Plan, errors: _Errors, symbol_currency) -> None:
    amount_header = plan.header_of("amount")
    errors.add((frame["amount"] < 0).fillna(False).to_numpy(dtype=bool), amount_header, trimmed[amount_header],
               "negative amount (refunds are not imported as orders)")
    currency = frame["currency"] if "currency" in frame else pd.Series("", index=frame.index)
    if symbol_currency is not None:
        currency = currency.where(currency != "", symbol_currency)
    if plan.default_currency:
        currency = currency.where(currency != "", plan.default_currency)
    frame["currency"] = currency
    errors.add((currency == "").to_numpy() & ~errors.rejected, plan.header_of("currency") or amount_header, "",
               "missing currency (map a currency column or set a default currency)")
    if "channel" in frame:
        channel = frame["channel"].where(frame["channel"] != "", plan.default_channel)
        errors.add(~channel.isin(C.CHANNELS).to_numpy(), plan.header_of("channel"), trimmed[plan.header_of("channel")],
                   "unknown channel (web, app, store or phone; extend the label map)")
        frame["channel"] = channel
    else:
        frame["channel"] = plan.default_channel
