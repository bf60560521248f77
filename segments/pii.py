"""Where the segments app keeps data about people (see cdp/pii.py)."""

from cdp.pii import NoPii, PiiLocation

LOCATIONS = [
    PiiLocation("segments.Membership", "profile_id", note="which segments a person is in"),
    PiiLocation("segments.MembershipChange", "profile_id", note="history of entries and exits"),
    PiiLocation("segments.Timer", "profile_id", note="next moment a person's membership can change"),
    PiiLocation("segments.RealtimeChange", "profile_id", note="a change waiting (seconds) for real-time evaluation"),
    PiiLocation("segments.WebhookDelivery", "", ("payload",), on_erasure="keep_hashed",
                note="payload lists profile ids (no personal fields); erasure removes the person's entries "
                     "(consent/services/person.py) and deletes deliveries left with nobody"),
]
NO_PII = [
    NoPii("segments.Segment", "definitions, schedules and settings"),
    NoPii("segments.SegmentRun", "run log: counts and durations"),
]
# Memberships, history, timers and queued changes point at profiles without a foreign key (per-row checks cost
# as much as the writes), so a wipe of all profiles must name them.
WIPED_WITH_PROFILES = ["segments_membership", "segments_membershipchange", "segments_timer",
                       "segments_realtimechange"]
