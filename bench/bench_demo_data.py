"""Demo data load: 100,000 profiles with ~2,000,000 events (target: under 3 minutes on 2 cores).

Runs in its own database (`cdp_bench` on the embedded server, or BENCH_DATABASE_URL), then
measures the raw limit in the same run: a single-connection COPY of the very same event rows
into a table with the same columns and indexes. Prints wall time, rows/s, peak memory of the
generator and the ratio to raw COPY.

    .venv/bin/python bench/bench_demo_data.py [--profiles 100000] [--days 90] [--seed 42]
"""

import argparse
import io
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from profiles.demo.generator import EVENT_COLUMNS, DemoOptions, demo_generate  # noqa: E402
from profiles.services import profiles_wipe  # noqa: E402


def raw_copy_reference(event_count: int) -> tuple[float, int]:
    """COPY the generated events, exported as text, into a same-shaped table; rows/s."""
    columns = ", ".join(EVENT_COLUMNS)
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY (SELECT {columns} FROM profiles_event) TO STDOUT") as copy:
            for block in copy:
                buffer.write(block)
        cursor.execute("DROP TABLE IF EXISTS bench_raw_event")
        cursor.execute("CREATE TABLE bench_raw_event (LIKE profiles_event INCLUDING DEFAULTS)")
        cursor.execute("ALTER TABLE bench_raw_event ADD PRIMARY KEY (id, timestamp)")
        cursor.execute("CREATE INDEX ON bench_raw_event (profile_id, name, timestamp)")
        cursor.execute("CREATE INDEX ON bench_raw_event (name, timestamp)")
        cursor.execute("CREATE INDEX ON bench_raw_event USING brin (timestamp)")
        data = buffer.getvalue()
        began = time.perf_counter()
        with raw.copy(f"COPY bench_raw_event ({columns}) FROM STDIN") as copy:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start:start + (1 << 20)])
        connection.commit() if not connection.get_autocommit() else None
        seconds = time.perf_counter() - began
        cursor.execute("SELECT count(*) FROM bench_raw_event")
        copied = cursor.fetchone()[0]
        cursor.execute("DROP TABLE bench_raw_event")
    assert copied == event_count, (copied, event_count)
    return seconds, len(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    profiles_wipe()
    result = demo_generate(options=DemoOptions(profiles=args.profiles, days=args.days, seed=args.seed))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = result.counts
    total_rows = sum(counts.values())
    events = counts["events"]

    copy_seconds, copy_bytes = raw_copy_reference(events)
    copy_rate = events / copy_seconds
    demo_event_rate = events / result.seconds

    print(f"demo data: {counts['profiles']:,} profiles, {events:,} events, {total_rows:,} rows in all "
          f"(identities, links, transactions, items included)")
    print(f"  load time          {result.seconds:8.1f} s   (target < 180 s)   -> {'OK' if result.seconds < 180 else 'MISSED'}")
    print(f"  events/s           {demo_event_rate:10,.0f}")
    print(f"  all rows/s         {total_rows / result.seconds:10,.0f}")
    print(f"  peak RSS           {peak_mb:8.0f} MB")
    print(f"raw COPY of the same {events:,} event rows ({copy_bytes / 1e6:,.0f} MB text, same indexes): "
          f"{copy_seconds:.1f} s = {copy_rate:,.0f} rows/s")
    print(f"  ratio demo events/s : raw COPY rows/s = {demo_event_rate / copy_rate:.2f}")


if __name__ == "__main__":
    main()
