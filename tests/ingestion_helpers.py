"""Helpers for tests that send events: consent the way a real site gives it.

A site either posts its consent manager's decision to `/v1/consent` (a CMP or back end), or lets
analytics.js' consent wrapper put `context.consent.categoryPreferences` on every event.
"""

import base64

import orjson

# What Segment's consent wrapper adds to each message's context (category names are chosen by
# the workspace; "Analytics" maps to our analytics purpose).
CONSENT = {"consent": {"categoryPreferences": {"Analytics": True, "Advertising": False}}}


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def consent_batch(*, user_ids=(), anonymous_ids=(), purposes=None) -> dict:
    """The /v1/consent body granting `purposes` (default: analytics) to these identifiers."""
    purposes = purposes or {"analytics": True}
    return {"batch": [{"userId": str(value), "purposes": purposes} for value in user_ids]
            + [{"anonymousId": str(value), "purposes": purposes} for value in anonymous_ids]}


def grant_analytics(client, key: str, *, user_ids=(), anonymous_ids=()) -> None:
    """Record analytics consent through /v1/consent with the source's write key (Django test client)."""
    response = client.generic("POST", "/v1/consent", orjson.dumps(consent_batch(user_ids=user_ids,
                                                                               anonymous_ids=anonymous_ids)),
                              content_type="application/json", HTTP_AUTHORIZATION=basic(key))
    assert response.status_code == 200, response.content


def with_consent(message: dict) -> dict:
    """The message with the consent wrapper's context added (other context keys kept)."""
    context = message.get("context") if isinstance(message.get("context"), dict) else {}
    return {**message, "context": {**context, **CONSENT}}
