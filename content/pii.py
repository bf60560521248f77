"""Where the content app keeps data about people (see cdp/pii.py)."""

from cdp.pii import NoPii, PiiLocation

LOCATIONS = [
    PiiLocation("content.Exposure", "profile_id", note="which content and experiment variant a person was shown"),
]
NO_PII = [NoPii("content.Slot", "configuration"), NoPii("content.ContentBlock", "templates"),
          NoPii("content.Variant", "templates"), NoPii("content.Experiment", "configuration")]
