from cdp.pii import NoPii

LOCATIONS = []
NO_PII = [NoPii("segments.Segment", "definitions only; memberships are declared with their model")]
