"""Reading uploaded files: CSV (any delimiter, quoted fields), gzip'd CSV and XLSX.

Everything streams: the format, encoding and delimiter are detected from the first few MB, and
rows come out as pandas DataFrames of strings, `chunk_rows` at a time (pandas' C parser for CSV,
openpyxl's read-only mode for XLSX), so a 1 GB file never sits in memory.
"""

import codecs
import csv
import gzip
import io
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLE_BYTES = 4 << 20
DELIMITERS = [",", ";", "\t", "|"]
_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")


class ImportFileError(ValueError):
    """The file cannot be read at all (not a CSV/XLSX, no header, wrong encoding, ...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class FileInfo:
    format: str  # csv, csv.gz, xlsx
    encoding: str
    delimiter: str
    headers: list[str]
    estimated_rows: int


@dataclass
class Chunk:
    frame: pd.DataFrame  # columns = headers, all str ('' for missing)
    row_numbers: np.ndarray  # file row of each record (header = row 1)
    bad_lines: list[tuple[int, str]]  # malformed records pandas skipped: (row, reason)


def file_format(path: Path) -> str:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "csv.gz"
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                if "xl/workbook.xml" in archive.namelist():
                    return "xlsx"
        except zipfile.BadZipFile:
            pass
        raise ImportFileError("unsupported_format", "This is a ZIP archive but not an Excel workbook (.xlsx).")
    return "csv"


def _open_binary(path: Path, fmt: str):
    return gzip.open(path, "rb") if fmt == "csv.gz" else open(path, "rb")


def detect_encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileError("unsupported_encoding", "UTF-16 files are not supported: save the file as UTF-8 CSV.")
    if b"\x00" in sample[:4096]:
        raise ImportFileError("unsupported_format", "This looks like a binary file, not a CSV or XLSX file.")
    # A sample may end inside a multi-byte character: cut back to the last newline first.
    cut = sample.rfind(b"\n")
    probe = sample[:cut] if cut > 0 and len(sample) >= SAMPLE_BYTES else sample
    try:
        probe.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        probe.decode("cp1252")
        return "cp1252"  # Windows Latin-1: what spreadsheet software writes as "Latin-1"
    except UnicodeDecodeError:
        return "latin-1"


def sniff_delimiter(text: str) -> str:
    head = text[:65536]
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        first_line = head.splitlines()[0] if head else ""
        counts = {d: first_line.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _count_lines(path: Path, fmt: str) -> int:
    lines, last = 0, b"\n"
    with _open_binary(path, fmt) as handle:
        while block := handle.read(16 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _clean_headers(raw: list) -> list[str]:
    headers, seen = [], {}
    for index, value in enumerate(raw):
        name = _cell_text(value).strip() or f"column {index + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name} ({seen[name]})"
        else:
            seen[name] = 1
        headers.append(name)
    return headers


def detect(path: Path, *, encoding: str = "", delimiter: str = "") -> FileInfo:
    """Format, encoding, delimiter, headers and an estimate of the rows (for the progress bar)."""
    fmt = file_format(path)
    if fmt == "xlsx":
        return _detect_xlsx(path)
    try:
        with _open_binary(path, fmt) as handle:
            sample = handle.read(SAMPLE_BYTES)
    except (OSError, EOFError) as exc:
        raise ImportFileError("unreadable_file", f"The file cannot be read: {exc}.") from None
    if not sample.strip():
        raise ImportFileError("empty_file", "The file is empty.")
    encoding = encoding or detect_encoding(sample)
    text = sample.decode(encoding, errors="replace")
    delimiter = delimiter or sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        raw_headers = next(reader)
    except (StopIteration, csv.Error):
        raise ImportFileError("no_header", "The first line must hold the column names.") from None
    headers = _clean_headers(raw_headers)
    if len(headers) < 1 or all(h.startswith("column ") for h in headers):
        raise ImportFileError("no_header", "The first line must hold the column names.")
    estimated = max(_count_lines(path, fmt) - 1, 0)
    return FileInfo(fmt, encoding, delimiter, headers, estimated)


def _detect_xlsx(path: Path) -> FileInfo:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a damaged file
        raise ImportFileError("unreadable_file", f"The workbook cannot be opened: {exc}.") from None
    try:
        sheet = workbook.worksheets[0]
        first = next(sheet.iter_rows(values_only=True), None)
        if not first or not any(_cell_text(v).strip() for v in first):
            raise ImportFileError("no_header", "The first row of the first sheet must hold the column names.")
        headers = _clean_headers(list(first))
        estimated = max((sheet.max_row or 1) - 1, 0)
    finally:
        workbook.close()
    return FileInfo("xlsx", "", "", headers, estimated)


def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ") if value.time() != time(0) else value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def iter_chunks(path: Path, info: FileInfo, *, chunk_rows: int) -> Iterator[Chunk]:
    if info.format == "xlsx":
        yield from _iter_xlsx(path, info, chunk_rows)
    else:
        yield from _iter_csv(path, info, chunk_rows)


def _iter_csv(path: Path, info: FileInfo, chunk_rows: int) -> Iterator[Chunk]:
    width = len(info.headers)
    skipped_before = 0
    next_record = 0
    reader = pd.read_csv(
        path, sep=info.delimiter, encoding=info.encoding, compression="gzip" if info.format == "csv.gz" else None,
        header=0, names=info.headers, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
        chunksize=chunk_rows, on_bad_lines="warn", engine="c", quotechar='"', doublequote=True,
        encoding_errors="strict", low_memory=True,
    )
    iterator = iter(reader)
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                frame = next(iterator)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise ImportFileError(
                    "wrong_encoding",
                    f"The file is not valid {info.encoding} (byte {exc.start} of a block cannot be decoded). "
                    "Choose another encoding on the mapping step, or save the file as UTF-8.") from None
            except pd.errors.ParserError as exc:
                raise ImportFileError("malformed_csv", f"The CSV file cannot be parsed: {exc}") from None
        bad = []
        for warning in caught:
            for line in str(warning.message).splitlines():
                match = _BAD_LINE.search(line)
                if match:
                    bad.append((int(match.group(1)), match.group(2).strip()))
        bad.sort()
        # Row numbers: the header is row 1; records pandas skipped shift the ones after them.
        rows = np.arange(next_record, next_record + len(frame), dtype=np.int64) + 2 + skipped_before
        for line, _reason in bad:
            rows[rows >= line] += 1
        skipped_before += len(bad)
        next_record += len(frame)
        if frame.shape[1] != width:
            frame = frame.reindex(columns=info.headers, fill_value="")
        yield Chunk(frame, rows, bad)


def _iter_xlsx(path: Path, info: FileInfo, chunk_rows: int) -> Iterator[Chunk]:
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        width = len(info.headers)
        buffer, numbers = [], []
        for row_number, values in enumerate(sheet.iter_rows(min_row=2, values_only=True), start=2):
            cells = [_cell_text(v) for v in values[:width]]
            cells += [""] * (width - len(cells))
            buffer.append(cells)
            numbers.append(row_number)
            if len(buffer) >= chunk_rows:
                yield Chunk(pd.DataFrame(buffer, columns=info.headers, dtype=str), np.array(numbers), [])
                buffer, numbers = [], []
        if buffer:
            yield Chunk(pd.DataFrame(buffer, columns=info.headers, dtype=str), np.array(numbers), [])
    finally:
        workbook.close()


def sample_rows(path: Path, info: FileInfo, *, rows: int = 20) -> Chunk:
    """The first `rows` records (for the mapping preview)."""
    for chunk in iter_chunks(path, info, chunk_rows=rows):
        return chunk
    return Chunk(pd.DataFrame(columns=info.headers, dtype=str), np.array([], dtype=np.int64), [])
