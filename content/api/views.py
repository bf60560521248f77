"""The client-site decision endpoint (plain Django, like the segment lookup it sits beside).

    POST /v1/decide  {"anonymous_id": "…" (or user_id, or email), "slots": ["home_hero", …]}
      -> {"personalized": true|false,
          "decisions": [{"slot": "home_hero", "block": "…"|null, "variant": "…"|null,
                         "experiment": "…"|null, "content": "…"}, {"slot": "x", "error": {…}}, …]}

Authentication: a source's read key (`Authorization: Bearer rk_…` or HTTP Basic user name);
write keys and staff sessions are refused. Without personalization consent every slot gets its
default content (content.services).
"""

from django.views.decorators.csrf import csrf_exempt

from content.services import MAX_SLOTS, decide
from segments.api.lookup_views import _error, _json, _preflight, _visitor, read_key_json_body

SLOT_HELP = "Send {\"user_id\": \"…\", \"slots\": [\"home_hero\"]} (or anonymous_id / email instead of user_id)."


@csrf_exempt
def content_decide(request):
    if request.method == "OPTIONS":
        return _preflight(request)
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST with {\"slots\": [...]} and one visitor identifier.", 405,
                      {"Allow": "POST, OPTIONS"})
    key, body, cors, failure = read_key_json_body(request)
    if failure:
        return failure
    if not isinstance(body, dict):
        return _json({"code": "invalid_request", "message": SLOT_HELP}, 400, cors)
    slots = body.get("slots")
    if (not isinstance(slots, list) or not slots or len(slots) > MAX_SLOTS
            or not all(isinstance(slot, str) and 0 < len(slot) <= 80 for slot in slots)):
        return _json({"code": "invalid_slots",
                      "message": f"slots must be a list of 1 to {MAX_SLOTS} slot keys. {SLOT_HELP}"}, 400, cors)
    visitor, problem = _visitor({kind: body.get(kind) for kind in ("anonymous_id", "user_id", "email")})
    if problem:
        return _json(problem, 400, cors)
    decision = decide(source_id=key.source_id, visitor=visitor, slot_keys=list(dict.fromkeys(slots)))
    return _json({"personalized": decision.personalized,
                  "decisions": [slot.as_json() for slot in decision.slots]}, 200, cors)
