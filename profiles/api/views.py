"""The Segment-compatible ingestion API: plain Django views (no DRF on the hot path).

Wire contract: shared segment-wire-spec.md. Every answer is JSON; success is exactly
`200 {"success": true}` and is sent only after the transaction that stored the events has
committed (the service returns after its atomic block). Errors are 4xx with `code` and
`message`. CORS: any origin may preflight and read answers; whether a browser origin may
*post* is decided per source (403 `origin_not_allowed`, the events kept for replay).
"""

import orjson
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from cdp import apikeys
from profiles.ingestion import services
from profiles.models import SourceKey

ALLOWED_METHODS = "GET, POST, OPTIONS"
DEFAULT_ALLOWED_HEADERS = "authorization, content-type, content-encoding, x-retry-count"
PREFLIGHT_MAX_AGE = "900"


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def _cors(request, response: HttpResponse) -> HttpResponse:
    origin = request.headers.get("Origin")
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Credentials"] = "true"
        response["Vary"] = "Origin"
    return response


def _preflight(request) -> HttpResponse:
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    requested = request.headers.get("Access-Control-Request-Headers", "")
    # Echo what the browser asks for (header names only; anything else falls back).
    safe = all(part.strip().replace("-", "").isalnum() for part in requested.split(",")) if requested else False
    response["Access-Control-Allow-Headers"] = requested if safe and len(requested) < 500 else DEFAULT_ALLOWED_HEADERS
    response["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return _cors(request, response)


def _not_allowed(request) -> HttpResponse:
    response = _json({"success": False, "code": "method_not_allowed",
                      "message": f"{request.method} is not supported here; use POST."}, status=405)
    response["Allow"] = "POST, OPTIONS"
    return _cors(request, response)


@csrf_exempt
def ingest(request, endpoint: str):
    """POST /v1/<batch|import|identify|track|page|screen|group|alias|b|i|t|p|s|g|a>."""
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "POST":
        return _not_allowed(request)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    # Read at most limit + compression slack + 1 bytes: never buffer an oversize body.
    cap = services.route_limit(endpoint) + 4097
    try:
        raw = request.read(cap)
    except OSError:  # the client went away mid-body (UnreadablePostError): nothing to store
        return _cors(request, _json({"success": False, "code": "incomplete_body",
                                     "message": "The request body could not be read completely."}, status=400))
    incoming = services.Incoming(
        endpoint=endpoint, raw=raw, content_encoding=request.headers.get("Content-Encoding", ""),
        authorization=request.headers.get("Authorization", ""), origin=request.headers.get("Origin", ""),
        declared_length=declared)
    result = services.request_ingest(incoming=incoming)
    response = _json(result.body(), status=result.status)
    if result.retry_after is not None:
        response["Retry-After"] = str(result.retry_after)
        response["X-RateLimit-Reset"] = str(result.retry_after)
    return _cors(request, response)


@csrf_exempt
def metrics(request):
    """POST /v1/m: analytics.js' own delivery metrics; accepted and ignored."""
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "POST":
        return _not_allowed(request)
    return _cors(request, _json({"success": True}))


@csrf_exempt
def project_settings(request, write_key: str):
    """GET /v1/projects/<writeKey>/settings: what analytics.js loads before sending anything."""
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "GET":
        response = _json({"success": False, "code": "method_not_allowed", "message": "Use GET."}, status=405)
        return _cors(request, response)
    if apikeys.key_resolve(write_key, kind=SourceKey.Kind.WRITE) is None:
        return _cors(request, _json({"success": False, "code": "invalid_write_key",
                                     "message": "The write key is unknown, revoked or expired."}, status=404))
    # Exactly one integration (more makes analytics.js fetch destination bundles from a CDN);
    # sampleRate 0 turns off /v1/m metrics.
    settings_json = {
        "integrations": {"Segment.io": {
            "apiKey": write_key, "apiHost": f"{request.get_host()}/v1", "protocol": request.scheme,
            "unbundledIntegrations": [], "addBundledMetadata": True, "maybeBundledConfigIds": {},
            "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}}},
        "plan": {}, "edgeFunction": {}, "middlewareSettings": {}, "enabledMiddleware": {},
        "metrics": {"sampleRate": 0}, "legacyVideoPluginsEnabled": False, "remotePlugins": [],
    }
    response = _json(settings_json)
    response["Cache-Control"] = "public, max-age=60"
    return _cors(request, response)
