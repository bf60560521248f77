"""Computed traits + RFM full recompute for 1,000,000 profiles (target: under 30 s).

Builds its data set with set-based SQL in its own database (`cdp_bench`, or BENCH_DATABASE_URL):
N profiles, ~3 orders each over two years (one item per order, 8 categories), then times
`computed_traits_rebuild` (aggregates, BTYD figures, quintile scores, segments, writes) three
times — into an empty table, again with nothing changed, and for the next day (every row
changes, as each night) — and the raw limit measured in the same run: one hand-written GROUP BY
over the same transactions into a temporary table.

    .venv/bin/python bench/bench_rfm.py [--profiles 1000000] [--orders-per-profile 3]
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")
os.environ.setdefault("CDP_BROKER_DIR", tempfile.mkdtemp(prefix="cdp-bench-broker-"))

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

AS_OF = date(2026, 11, 1)


def build(profiles: int, orders_per_profile: int) -> int:
    """Profiles and transactions generated inside PostgreSQL (deterministic: setseed)."""
    from profiles.models import Source
    from profiles.services import profiles_wipe

    profiles_wipe()
    source, _ = Source.objects.get_or_create(name="Bench shop", defaults={"kind": Source.Kind.WEBSITE})
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute("""
            INSERT INTO profiles_profile (id, created_at, updated_at, gender, country, city, postcode, income_band,
                language, occupation, last_device_type, last_os, last_browser, traits)
            SELECT gen_random_uuid(), now(), now(), '', '', '', '', '', '', '', '', '', '', '{}'
            FROM generate_series(1, %s)""", [profiles])
        # Orders per profile vary (1 to 2 x the mean); times spread over two years before AS_OF.
        cursor.execute("""
            INSERT INTO profiles_transaction (source_id, order_id, profile_id, amount, currency, channel, store,
                                              timestamp, created_at)
            SELECT %s, 'B' || row_number() OVER (), p.id, round((5 + random() * 195)::numeric, 2), 'EUR', 'web', '',
                   %s::timestamptz - random() * interval '730 days', now()
            FROM profiles_profile p
            CROSS JOIN LATERAL generate_series(1, 1 + floor(random() * (2 * %s - 1))::int + (p.id IS NULL)::int)""",
                       [source.id, AS_OF.isoformat(), orders_per_profile])
        cursor.execute("""
            INSERT INTO profiles_transactionitem (transaction_id, product_sku, product_name, category, price, quantity)
            SELECT id, '', '', (ARRAY['Food','Home','Books','Fashion','Electronics','Beauty','Sports','Toys'])
                   [1 + floor(random() * 8)::int], amount, 1
            FROM profiles_transaction""")
        cursor.execute("SELECT count(*) FROM profiles_transaction")
        orders = cursor.fetchone()[0]
    with connection.cursor() as cursor:
        for table in ("profiles_profile", "profiles_transaction", "profiles_transactionitem"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return orders


def raw_reference() -> float:
    """The raw limit: one GROUP BY over the same transactions (orders, sum, first, last, days)."""
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("""
            CREATE TEMP TABLE bench_raw ON COMMIT DROP AS
            SELECT profile_id, count(*) AS orders, sum(amount) AS total, min(timestamp) AS first_at,
                   max(timestamp) AS last_at, count(DISTINCT (timestamp AT TIME ZONE 'UTC')::date) AS days
            FROM profiles_transaction GROUP BY profile_id""")
    return time.perf_counter() - began


def main() -> None:
    from profiles.models import ComputedTraits
    from profiles.traits.services import computed_traits_rebuild

    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--orders-per-profile", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", interactive=False, verbosity=0)
    began = time.perf_counter()
    orders = build(args.profiles, args.orders_per_profile)
    print(f"data: {args.profiles:,} profiles, {orders:,} orders with one item each "
          f"(built in {time.perf_counter() - began:.0f} s)")
    raw_seconds = raw_reference()
    first = computed_traits_rebuild(as_of=AS_OF)
    second = computed_traits_rebuild(as_of=AS_OF)
    nightly = computed_traits_rebuild(as_of=AS_OF + timedelta(days=1))  # T grows: every row changes
    segments = dict(ComputedTraits.objects.values_list("rfm_segment").annotate(n=django.db.models.Count("pk"))
                    .order_by())
    print(f"  full RFM recompute, empty table        {first.seconds:7.1f} s  ({first.profiles:,} rows written)  "
          f"target < 30 s -> {'OK' if first.seconds < 30 else 'MISSED'}")
    print(f"  full RFM recompute, nothing changed    {second.seconds:7.1f} s  ({second.profiles:,} rows written)")
    print(f"  full RFM recompute, next day (nightly) {nightly.seconds:7.1f} s  ({nightly.profiles:,} rows written)  "
          f"target < 30 s -> {'OK' if nightly.seconds < 30 else 'MISSED'}")
    print(f"  raw limit: one GROUP BY of the orders  {raw_seconds:7.1f} s   ratio recompute : raw = "
          f"{first.seconds / raw_seconds:.1f}x")
    print("  segments: " + ", ".join(f"{k or '(none)'} {v:,}" for k, v in sorted(segments.items())))


if __name__ == "__main__":
    main()
