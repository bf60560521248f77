"""Segment-compatible event ingestion (the collect stage).

- `body`: reading the request: size limits on decompressed bytes, gzip, JSON.
- `validation`: the compiled per-message validator (msgspec) and the Segment rules.
- `normalisation`: a valid message -> an events-table row (clock skew, ids, traits, extra) and
  the transaction an `Order Completed` event carries.
- `writer`: set-based SQL and COPY into the events, dedupe, transactions and rejections tables.
- `services`: the operations the API, the screens and the replay command call.
"""
