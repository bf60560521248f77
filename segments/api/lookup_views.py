"""The client-site lookup: which segments is this visitor in? (plain Django: the hot path).

Authentication is a source's read key in the Authorization header, as `Bearer rk_…` or as the
HTTP Basic user name (like Segment's write keys). Keys in the query string are refused: URLs end
up in logs, proxies and browser history.

    GET  /v1/segments?anonymous_id=…  (or user_id=…, or email=…)  -> {"segments": ["key", …]}
    POST /v1/segments/bulk  {"visitors": [{"anonymous_id": "…"}, …]}  (up to 1,000)
         -> {"results": [{"segments": [...]}, {"error": {"code": …, "message": …}}, …]}

Only segments flagged as exposed to the key's source are returned.
"""

import base64
import binascii
import time

import orjson
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from cdp import apikeys
from profiles.models import Source, SourceKey
from segments.lookup import BULK_LIMIT, LOOKUP_KINDS, segment_keys_for, visitor_hash

KEY_PARAMETERS = frozenset(("key", "read_key", "readkey", "api_key", "apikey", "write_key", "token", "access_token"))
NO_STORE = {"Cache-Control": "no-store"}
MAX_BODY = 512 * 1024
_origins: dict[int, tuple[float, frozenset]] = {}


def _json(data, status: int = 200, origin_headers: dict | None = None) -> HttpResponse:
    headers = {"Cache-Control": "no-store", **origin_headers} if origin_headers else NO_STORE
    return HttpResponse(orjson.dumps(data), content_type="application/json", status=status, headers=headers)


def _error(code: str, message: str, status: int, headers: dict | None = None) -> HttpResponse:
    response = _json({"code": code, "message": message}, status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _raw_key(request) -> str:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8", "replace").split(":", 1)[0]
        except (binascii.Error, ValueError):
            return ""
    return ""


def _cors_headers(request, source_id: int) -> dict:
    """Browsers may call from the source's allowed origins only."""
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return {}
    cached = _origins.get(source_id)
    if cached is None or cached[0] < time.monotonic():
        allowed = Source.objects.filter(pk=source_id).values_list("allowed_origins", flat=True).first() or []
        cached = (time.monotonic() + 5.0, frozenset(allowed))
        _origins[source_id] = cached
    if origin in cached[1]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


def _authenticate(request):
    if not KEY_PARAMETERS.isdisjoint(request.GET):
        return None, _error("key_in_url", "Send the read key in the Authorization header, never in the URL.", 400)
    raw = _raw_key(request)
    if not raw:
        return None, _error("missing_key", "Authenticate with a read key: 'Authorization: Bearer rk_…'.", 401,
                            {"WWW-Authenticate": 'Bearer realm="segments"'})
    key = apikeys.key_resolve(raw, kind=SourceKey.Kind.READ)
    if key is None:
        return None, _error("invalid_key", "The read key is unknown, revoked or expired.", 401,
                            {"WWW-Authenticate": 'Bearer realm="segments"'})
    return key, None


def _visitor(item) -> tuple[tuple[str, bytes] | None, dict | None]:
    """((kind, hash), None) or (None, error) for one {"anonymous_id": …} visitor."""
    if not isinstance(item, dict):
        return None, {"code": "invalid_visitor", "message": "Each visitor is an object such as {\"user_id\": \"u1\"}."}
    given = [kind for kind in LOOKUP_KINDS if item.get(kind) not in (None, "")]
    if len(given) != 1:
        return None, {"code": "invalid_visitor",
                      "message": "Give exactly one of anonymous_id, user_id or email."}
    kind = given[0]
    digest = visitor_hash(kind, item[kind])
    if digest is None:
        return None, {"code": "invalid_identifier", "message": f"The {kind.replace('_', ' ')} is not usable."}
    return (kind, digest), None


@csrf_exempt
def segment_lookup(request):
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "GET":
        return _error("method_not_allowed", "Use GET (or POST /v1/segments/bulk).", 405, {"Allow": "GET, OPTIONS"})
    key, failure = _authenticate(request)
    if failure:
        return failure
    pair, problem = _visitor({kind: request.GET.get(kind) for kind in LOOKUP_KINDS})
    cors = _cors_headers(request, key.source_id)
    if problem:
        return _json(problem, 400, cors)
    keys = segment_keys_for(source_id=key.source_id, pairs=[pair])[pair]
    return _json({"segments": keys}, 200, cors)


def read_key_json_body(request):
    """(key, parsed body, CORS headers, None) for a POST from a client site with a read key, or
    (…, failure response): a missing / wrong key, an oversize body, JSON that does not parse.
    Shared by the bulk lookup and content's POST /v1/decide."""
    key, failure = _authenticate(request)
    if failure:
        return None, None, {}, failure
    cors = _cors_headers(request, key.source_id)
    if len(request.body) > MAX_BODY:
        return key, None, cors, _json({"code": "too_large",
                                       "message": f"The body is larger than {MAX_BODY // 1024} KB."}, 413, cors)
    try:
        return key, orjson.loads(request.body), cors, None
    except orjson.JSONDecodeError:
        return key, None, cors, _json({"code": "invalid_json", "message": "The body is not valid JSON."}, 400, cors)


@csrf_exempt
def segment_lookup_bulk(request):
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST with {\"visitors\": [...]}.", 405, {"Allow": "POST, OPTIONS"})
    key, body, cors, failure = read_key_json_body(request)
    if failure:
        return failure
    visitors = body.get("visitors") if isinstance(body, dict) else None
    if not isinstance(visitors, list) or not visitors:
        return _json({"code": "invalid_request", "message": "Send {\"visitors\": [{\"user_id\": \"…\"}, …]}."},
                     400, cors)
    if len(visitors) > BULK_LIMIT:
        return _json({"code": "too_many_visitors", "message": f"At most {BULK_LIMIT:,} visitors per request."},
                     400, cors)
    parsed = [_visitor(item) for item in visitors]
    found = segment_keys_for(source_id=key.source_id, pairs=sorted({pair for pair, _ in parsed if pair}))
    results = [{"segments": found[pair]} if pair else {"error": problem} for pair, problem in parsed]
    return _json({"results": results}, 200, cors)


def _preflight(request) -> HttpResponse:
    response = HttpResponse(status=204)
    origin = request.META.get("HTTP_ORIGIN")
    if origin:
        # The key is checked on the real request; the preflight only announces what may be sent.
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response["Access-Control-Max-Age"] = "600"
        response["Vary"] = "Origin"
    return response
