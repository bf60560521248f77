"""Reading an ingestion request body: size limits on the decompressed bytes, gzip, JSON.

Django does not gunzip and its DATA_UPLOAD_MAX_MEMORY_SIZE check would answer an HTML 400, so
the view reads the stream itself (at most `limit + 1` bytes) and this module does the rest.
Decompression is bounded by `max_length`: a gzip bomb is refused after `limit + 1` bytes of
output, never expanded in memory.
"""

import zlib
from dataclasses import dataclass

import orjson

from profiles.ingestion.validation import Problem

# Compressed input is never larger than the output limit plus gzip's framing; a little slack
# covers incompressible bodies.
COMPRESSED_SLACK = 4096
KEPT_PREFIX_BYTES = 64 * 1024  # what a rejection keeps of an input too large to keep whole


@dataclass(slots=True)
class Decoded:
    text_bytes: bytes = b""  # decompressed body (or its prefix when too large)
    data: object = None
    problem: Problem | None = None
    status: int = 200
    full_size: int = 0  # bytes of the (decompressed) input seen, when more than text_bytes holds


def _too_large(limit: int, prefix: bytes, what: str) -> Decoded:
    return Decoded(text_bytes=prefix[:KEPT_PREFIX_BYTES], full_size=len(prefix), status=413,
                   problem=Problem("request_too_large", f"The {what} is larger than {limit:,} bytes."))


def _gunzip(raw: bytes, limit: int, wbits: int) -> Decoded:
    output, data = bytearray(), raw
    try:
        while data:
            inflater = zlib.decompressobj(wbits=wbits)
            output += inflater.decompress(data, limit + 1 - len(output))
            if len(output) > limit or inflater.unconsumed_tail:
                return _too_large(limit, bytes(output), "decompressed body")
            if not inflater.eof:
                return Decoded(status=400, problem=Problem("invalid_encoding", "The compressed body is truncated."))
            data = inflater.unused_data  # gzip allows several members one after another
    except zlib.error:
        return Decoded(status=400, problem=Problem("invalid_encoding", "The body is not valid gzip/deflate data."))
    return Decoded(text_bytes=bytes(output))


def body_decode(raw: bytes, *, content_encoding: str, limit: int) -> Decoded:
    """Decompress (gzip, deflate or none) and parse the body as JSON, whatever the Content-Type."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            return _too_large(limit, raw, "request body")
        decoded = Decoded(text_bytes=raw)
    elif encoding in ("gzip", "x-gzip", "deflate"):
        if len(raw) > limit + COMPRESSED_SLACK:
            return _too_large(limit, b"", "compressed request body")
        decoded = _gunzip(raw, limit, 31 if "gzip" in encoding else 15)
        if decoded.problem:
            return decoded
    else:
        return Decoded(status=415, problem=Problem("unsupported_encoding",
                                                   f"Content-Encoding {encoding[:30]!r} is not supported; "
                                                   "send gzip, deflate or no encoding."))
    try:
        decoded.data = orjson.loads(decoded.text_bytes)
    except orjson.JSONDecodeError as exc:
        decoded.status = 400
        decoded.problem = Problem("invalid_json", f"The body is not valid JSON: {str(exc)[:200]}")
        return decoded
    if not isinstance(decoded.data, dict):
        decoded.status = 400
        decoded.problem = Problem("invalid_json", "The body must be a JSON object.")
    return decoded


def text_for_storage(data: bytes) -> str:
    """Bytes of a rejected body as text (invalid UTF-8 replaced; stored encrypted, so any
    character survives)."""
    return data.decode("utf-8", errors="replace")
