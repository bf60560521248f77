from cdp.pii import NoPii

LOCATIONS = []
NO_PII = [NoPii("content.Slot", "configuration"), NoPii("content.ContentBlock", "templates"),
          NoPii("content.Variant", "templates"), NoPii("content.Experiment", "configuration")]
