"""Segment-compatible event ingestion (the collect stage).

- `body`: reading the request: size limits on decompressed bytes, gzip, JSON.
- `validation`: the compiled per-message validator (msgspec) and the Segment rules.
- `normalisation`: a valid message -> an events-table row (clock skew, ids, traits, extra) and
  the transaction an `Order Completed` event carries.
- `gate`: consent at the door: preferences recorded, analytics and suppression checked,
  minimisation applied, the rest counted as dropped (one read per request).
- `writer`: set-based SQL into the events, dedupe, transactions, rejections and dropped counts.
- `services`: the operations the API, the screens and the replay command call.
"""
