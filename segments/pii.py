"""Where the segments app keeps data about people (see cdp/pii.py)."""

from cdp.pii import NoPii, PiiLocation

LOCATIONS = [
    PiiLocation("segments.Membership", "profile_id", note="which segments a person is in"),
    PiiLocation("segments.MembershipChange", "profile_id", note="history of entries and exits"),
    PiiLocation("segments.Timer", "profile_id", note="next moment a person's membership can change"),
    PiiLocation("segments.WebhookDelivery", "", ("payload",),
                note="payload lists profile ids (no personal fields); erasure must search payloads by profile id"),
]
NO_PII = [
    NoPii("segments.Segment", "definitions, schedules and settings"),
    NoPii("segments.SegmentRun", "run log: counts and durations"),
]
