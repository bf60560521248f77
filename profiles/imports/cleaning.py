"""Cleaning one column at a time, vectorised with pandas: trim, label maps, dates, amounts,
emails, phones. Each cleaner returns the clean values and, for values it could not read, the
reason (validation of meaning, e.g. "in the future", lives in validation.py)."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from profiles.identifiers import EMAIL_RE, normalize_phone

DATE_FORMATS = {
    "iso": "ISO 8601 (2024-03-31, 2024-03-31T14:05)",
    "eu": "Day first (31/03/2024, 31.03.2024)",
    "us": "Month first (03/31/2024)",
    "yyyymmdd": "Compact (20240331)",
}
DEFAULT_LABEL_MAPS = {
    "gender": {"m": "male", "male": "male", "man": "male", "mann": "male", "männlich": "male", "h": "male",
               "homme": "male", "f": "female", "female": "female", "woman": "female", "w": "female",
               "frau": "female", "weiblich": "female", "femme": "female", "x": "non_binary", "d": "non_binary",
               "diverse": "non_binary", "divers": "non_binary", "non-binary": "non_binary",
               "non binary": "non_binary", "nonbinary": "non_binary", "other": "non_binary",
               "u": "", "unknown": "", "n/a": "", "-": ""},
    "channel": {"web": "web", "online": "web", "website": "web", "e-commerce": "web", "ecommerce": "web",
                "shop online": "web", "app": "app", "mobile app": "app", "mobile": "app", "store": "store",
                "in-store": "store", "instore": "store", "in store": "store", "retail": "store", "pos": "store",
                "shop": "store", "offline": "store", "phone": "phone", "call centre": "phone",
                "call center": "phone", "telephone": "phone", "callcenter": "phone"},
}
CHANNELS = {"web", "app", "store", "phone"}
TRUE_WORDS = {"1", "true", "yes", "y", "ja", "oui", "granted", "opt-in", "optin", "opted in", "subscribed", "x"}
FALSE_WORDS = {"0", "false", "no", "n", "nein", "non", "denied", "withdrawn", "opt-out", "optout", "opted out",
               "unsubscribed"}
CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "₽": "RUB",
                    "zł": "PLN", "kr": "SEK", "chf": "CHF", "fr.": "CHF", "₺": "TRY", "r$": "BRL"}
_CODE_IN_AMOUNT = re.compile(r"([A-Za-z]{3})")
_SYMBOL_IN_AMOUNT = re.compile("(" + "|".join(re.escape(s) for s in sorted(CURRENCY_SYMBOLS, key=len,
                                                                                reverse=True)) + ")",
                               re.IGNORECASE)


@lru_cache(maxsize=1)
def iso_currencies() -> frozenset[str]:
    path = Path(__file__).resolve().parent.parent / "data" / "iso4217.txt"
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip() and line[0] != "#")


@dataclass
class Cleaned:
    values: pd.Series
    bad: np.ndarray  # bool mask: value present but unreadable
    reason: str | pd.Series = ""


def _arrow(series: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    """The column's Arrow strings (no copy for pandas' Arrow-backed str), None for other dtypes."""
    if not pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        return None
    try:
        return pa.array(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _edge_characters(strings) -> set[str]:
    """The distinct first and last characters of the strings (a handful, whatever the rows)."""
    edges = set()
    for piece in (pc.utf8_slice_codeunits(strings, 0, 1), pc.utf8_slice_codeunits(strings, -1, 2 ** 31 - 1)):
        edges.update(v for v in pc.unique(piece).to_pylist() if v)
    return edges


def trim(series: pd.Series) -> pd.Series:
    """Strip surrounding whitespace. Most columns have none: Arrow lists the distinct first and
    last characters of the column (in C++), Python's own str.isspace judges those few, and the
    strip only runs where it changes something."""
    text = series.astype(str)
    strings = _arrow(text)
    if strings is not None:
        if not any(c.isspace() for c in _edge_characters(strings)):
            return text
        return text.str.strip()
    joined = "\x00" + "\x00".join(text.tolist()) + "\x00"
    if not (_SPACE_AFTER_NUL.search(joined) or _SPACE_AFTER_NUL.search(joined[::-1])):
        return text
    return text.str.strip()


_SPACE_AFTER_NUL = re.compile(r"\x00\s")  # a literal first character: the scan jumps from NUL to NUL


def present(series: pd.Series) -> np.ndarray:
    return (series != "").to_numpy()


def clean_text(series: pd.Series, max_length: int) -> Cleaned:
    bad = (series.str.len() > max_length).to_numpy()
    return Cleaned(series, bad, f"longer than {max_length} characters")


def clean_label(series: pd.Series, mapping: dict[str, str], max_length: int) -> Cleaned:
    """Map labels case-insensitively ("M", "male", "Male " -> "male"); others are lower-cased."""
    lowered = series.str.lower()
    if mapping:
        keys = {str(k).strip().lower(): str(v).strip() for k, v in mapping.items()}
        mapped = lowered.map(keys)
        lowered = mapped.where(mapped.notna(), lowered)
    bad = (lowered.str.len() > max_length).to_numpy()
    return Cleaned(lowered.astype(str), bad, f"longer than {max_length} characters")


def clean_email(series: pd.Series) -> Cleaned:
    lowered = series.str.lower()
    ok = lowered.str.match(EMAIL_RE.pattern) & (lowered.str.len() <= 200)
    bad = present(series) & ~ok.to_numpy(dtype=bool)
    return Cleaned(lowered.where(~bad, ""), bad, "malformed email address")


def clean_phone(series: pd.Series, region: str | None) -> Cleaned:
    uniques = {value: normalize_phone(value, region) for value in series.unique() if value}
    normalized = series.map(lambda v: uniques.get(v) or "" if v else "")
    bad = present(series) & (normalized == "").to_numpy()
    return Cleaned(normalized, bad, "not a valid phone number (add the country code, e.g. +49 …)")


def clean_identifier(series: pd.Series, max_length: int) -> Cleaned:
    lowered = series.str.lower()
    meaningless = lowered.isin(["null", "none", "undefined", "nan", "n/a", "-"]).to_numpy()
    values = series.where(~meaningless, "")
    bad = (values.str.len() > max_length).to_numpy()
    return Cleaned(values, bad, f"longer than {max_length} characters")


def clean_sha256(series: pd.Series) -> Cleaned:
    lowered = series.str.lower()
    ok = lowered.str.fullmatch(r"[0-9a-f]{64}").to_numpy(dtype=bool)
    bad = present(series) & ~ok
    return Cleaned(lowered.where(~bad, ""), bad, "not a SHA-256 hex digest (64 hexadecimal characters)")


def parse_dates(series: pd.Series, fmt: str) -> pd.Series:
    """Parse to UTC timestamps (naive times are read as UTC); NaT where unreadable."""
    if fmt == "iso":
        return pd.to_datetime(series, format="ISO8601", errors="coerce", utc=True)
    if fmt == "yyyymmdd":
        return pd.to_datetime(series, format="%Y%m%d", errors="coerce", utc=True)
    day_first = fmt == "eu"
    text = series.str.replace(r"[.\-]", "/", regex=True).str.replace("T", " ", regex=False)
    pattern = "%d/%m/%Y" if day_first else "%m/%d/%Y"
    parsed = pd.to_datetime(text, format=pattern, errors="coerce", utc=True)
    for suffix in (" %H:%M:%S", " %H:%M", ""):
        for year in ("%Y", "%y"):
            missing = parsed.isna() & (text != "")
            if not missing.any():
                return parsed
            attempt = pattern.replace("%Y", year) + suffix
            if attempt == pattern:
                continue
            parsed = parsed.where(~missing, pd.to_datetime(text.where(missing, ""), format=attempt,
                                                            errors="coerce", utc=True))
    return parsed


def date_format_guess(values: list[str]) -> tuple[str, list[str]]:
    """The date format of a sample: (best format, formats that read the sample equally well).

    More than one candidate means the file is ambiguous (e.g. 03/04/2024 with no day > 12): the
    person importing must choose.
    """
    sample = pd.Series([v.strip() for v in values if v and v.strip()][:500], dtype=str)
    if sample.empty:
        return "iso", []
    scores = {fmt: int(parse_dates(sample, fmt).notna().sum()) for fmt in DATE_FORMATS}
    best = max(scores.values())
    candidates = [fmt for fmt, score in scores.items() if score == best and best > 0]
    if not candidates:
        return "iso", []
    return candidates[0], candidates if len(candidates) > 1 else []


def clean_dates(series: pd.Series, fmt: str) -> Cleaned:
    parsed = parse_dates(series, fmt)
    bad = present(series) & parsed.isna().to_numpy()
    return Cleaned(parsed, bad, f"not a date in the chosen format ({DATE_FORMATS.get(fmt, fmt)})")


def decimal_comma_guess(values: list[str]) -> bool:
    """True when amounts in the sample use a decimal comma (12,50 / 1.234,50)."""
    sample = pd.Series([v for v in values if v], dtype=str)
    if sample.empty:
        return False
    comma = sample.str.contains(r"\d,\d{1,2}(?:\D*)$", regex=True).sum()
    point = sample.str.contains(r"\d\.\d{1,2}(?:\D*)$", regex=True).sum()
    return bool(comma > point)


def _plain_numbers(series: pd.Series) -> pd.Series | None:
    """Every present value read as a plain finite number by Arrow's parser (C++, several times
    pd.to_numeric's speed), missing ones NaN; None when some value is not one (the caller then
    takes the pandas path, which says which)."""
    strings = _arrow(series)
    if strings is None:
        return None
    try:
        numbers = pc.cast(pc.if_else(pc.equal(strings, ""), pa.scalar(None, strings.type), strings), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # "nan" and "inf" parse too: such values are not amounts or counts, the pandas path rejects them.
    if pc.any(pc.and_(pc.is_valid(numbers), pc.invert(pc.is_finite(numbers)))).as_py():
        return None
    return pd.Series(numbers.to_numpy(zero_copy_only=False), index=series.index, dtype=np.float64)


def clean_amounts(series: pd.Series, decimal_comma: bool) -> tuple[Cleaned, pd.Series]:
    """Amounts with thousands separators and currency symbols -> numbers; also the currency the
    symbol or code names ('€1.234,50' -> 1234.5, 'EUR')."""
    if not decimal_comma:
        # Fast path: most exports write plain numbers ("12.50"), which pandas parses in C; only
        # the rest goes through the regular expressions.
        fast = _plain_numbers(series)
        plain = fast if fast is not None else pd.to_numeric(series.where(series != "", None), errors="coerce")
        slow = (plain.isna() & (series != "")).to_numpy()
        if slow.any():
            cleaned, currency = _clean_amounts_text(series[slow], decimal_comma)
            plain = plain.astype(float)
            plain[slow] = cleaned.values
            bad = np.zeros(len(series), dtype=bool)
            bad[slow] = cleaned.bad
            reason = pd.Series("not an amount", index=series.index)
            reason[slow] = cleaned.reason
            too_big = (plain.abs() >= 1e12).fillna(False).to_numpy(dtype=bool)
            reason[too_big] = "amount too large"
            return Cleaned(plain.round(2), bad | too_big, reason), currency.reindex(series.index, fill_value="")
        too_big = (plain.abs() >= 1e12).fillna(False).to_numpy(dtype=bool)
        return Cleaned(plain.round(2), too_big, "amount too large"), pd.Series("", index=series.index)
    return _clean_amounts_text(series, decimal_comma)


def _clean_amounts_text(series: pd.Series, decimal_comma: bool) -> tuple[Cleaned, pd.Series]:
    symbol = series.str.extract(_SYMBOL_IN_AMOUNT, expand=False).str.lower().map(CURRENCY_SYMBOLS)
    code = series.str.extract(_CODE_IN_AMOUNT, expand=False).str.upper()
    code = code.where(code.isin(iso_currencies()))
    currency = code.fillna(symbol).fillna("")
    negative = series.str.match(r"^\s*\(.*\)\s*$") | series.str.contains(r"-\s*$|^\s*-|[^\d]-\d", regex=True)
    digits = series.str.replace(r"[^\d,.]", "", regex=True)
    if decimal_comma:
        digits = digits.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        digits = digits.str.replace(",", "", regex=False)
    number = pd.to_numeric(digits.where(digits.str.contains(r"\d", regex=True), ""), errors="coerce")
    number = number.where(~negative.to_numpy(dtype=bool), -number)
    letters = series.str.replace(_SYMBOL_IN_AMOUNT, "", regex=True).str.replace(_CODE_IN_AMOUNT, "", regex=True)
    junk = letters.str.contains(r"[A-Za-z]", regex=True).to_numpy(dtype=bool)
    bad = present(series) & (number.isna().to_numpy() | junk)
    too_big = (number.abs() >= 1e12).fillna(False).to_numpy(dtype=bool)
    reason = pd.Series(np.where(too_big, "amount too large", "not an amount"), index=series.index)
    return Cleaned(number.round(2), bad | too_big, reason), currency


def clean_integers(series: pd.Series) -> Cleaned:
    plain = _plain_numbers(series)
    if plain is None:
        plain = pd.to_numeric(series.where(series != "", None), errors="coerce")
    if not (plain.isna() & (series != "")).any():  # fast path: plain digits
        whole = plain.isna() | (plain == plain.round())
        bad = ~whole.to_numpy(dtype=bool) | (plain.abs() > 2_000_000_000).fillna(False).to_numpy(dtype=bool)
        return Cleaned(plain.where(~bad).astype("Int64"), bad, "not a whole number")
    text = series.str.replace(r"[\s']", "", regex=True).str.replace(r"\.0+$", "", regex=True)
    number = pd.to_numeric(text.where(text != "", None), errors="coerce")
    whole = number.isna() | (number == number.round())
    bad = present(series) & (number.isna() | ~whole).to_numpy(dtype=bool)
    out_of_range = (number.abs() > 2_000_000_000).fillna(False).to_numpy(dtype=bool)
    return Cleaned(number.where(~(bad | out_of_range)).astype("Int64"), bad | out_of_range, "not a whole number")


def clean_currency(series: pd.Series) -> Cleaned:
    upper = series.str.upper()
    bad = present(series) & ~upper.isin(iso_currencies()).to_numpy()
    return Cleaned(upper, bad, "unknown currency (not an ISO 4217 code such as EUR, USD, GBP)")


def clean_country(series: pd.Series) -> Cleaned:
    upper = series.str.upper()
    bad = present(series) & ~upper.str.fullmatch(r"[A-Z]{2}").to_numpy(dtype=bool)
    return Cleaned(upper, bad, "not an ISO 3166 two-letter country code (e.g. DE, FR, US)")


def clean_bool(series: pd.Series) -> Cleaned:
    lowered = series.str.lower()
    truth = lowered.isin(TRUE_WORDS)
    falsity = lowered.isin(FALSE_WORDS)
    values = pd.Series(np.where(truth, "t", np.where(falsity, "f", "")), index=series.index)
    bad = present(series) & ~(truth | falsity).to_numpy()
    return Cleaned(values, bad, "not yes/no (use yes/no, true/false or 1/0)")


def now_utc() -> pd.Timestamp:
    return pd.Timestamp(datetime.now(UTC))
