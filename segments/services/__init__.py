"""Business operations of the segments app (the only code that writes segment data).

- definitions.py: create / update / archive segments, definition checks, sharing
- membership.py: applying an evaluation to the versioned membership, history, timers
- recompute.py: full recomputes (runs, advisory lock, stale runs, failures), the dispatcher
- realtime.py: real-time evaluation of changed profiles and the timer sweep
- static.py: uploaded id / email lists
- webhooks.py: signed enter / exit deliveries with retries and the address guard
"""
