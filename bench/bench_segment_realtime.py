"""Real-time evaluation step: a batch of changed profiles in, memberships updated (the work the
`segments.realtime_evaluate` task does after identity resolution). Target context: event
accepted -> visible in lookups in under 1 s (p95) at 1,000 events/s; the end-to-end figure
through ingestion is measured at integration, this script measures the evaluation step.

Data: the demo shop (`--profiles`, 90 days) in its own database `cdp_bench_realtime`, the seven
template segments computed. Each round inserts one new event for each of `--batch` random
profiles (product_viewed / added_to_cart / checkout_started, now) and times:

- our step: `realtime_evaluate(profile_ids, event_names)` — affected segments only, each under
  its try-lock, restricted query, membership diff, history, timers, cache invalidation;
- the raw limit in the same run: the same restricted evaluation queries alone (SELECT, no writes).

    .venv/bin/python bench/bench_segment_realtime.py [--profiles 20000] [--batch 100] [--rounds 40]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench_realtime"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")
os.environ["CDP_BROKER_DIR"] = tempfile.mkdtemp(prefix="bench-broker-")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

EVENTS = ["product_viewed", "product_viewed", "added_to_cart", "checkout_started"]


def say(text: str) -> None:
    print(text, flush=True)


def prepare(profiles: int) -> list:
    from profiles.demo.generator import DemoOptions, demo_generate
    from profiles.models import Profile
    from profiles.services import profiles_wipe
    from segments.models import Segment, SegmentRun
    from segments.presets import PRESETS, preset_definition
    from segments.services.definitions import segment_create
    from segments.services.recompute import segment_recompute

    call_command("migrate", interactive=False, verbosity=0)
    if Profile.objects.count() != profiles or Segment.objects.count() != len(PRESETS):
        began = time.perf_counter()
        profiles_wipe()
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE segments_segment, segments_segmentrun, segments_membership, "
                           "segments_membershipchange, segments_timer, segments_webhookdelivery CASCADE")
        demo_generate(options=DemoOptions(profiles=profiles, days=90, seed=11))
        for key in PRESETS:
            segment = segment_create(actor=None, key=key, name=key, definition=preset_definition(key))
            segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
        say(f"  demo data and {len(PRESETS)} template segments in {time.perf_counter() - began:.0f} s")
    return list(Profile.objects.values_list("id", flat=True))


def insert_events(profile_ids: list, names: list[str]) -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO profiles_event (timestamp, received_at, profile_id, message_id, type, name, properties, context) "
            "SELECT %s, %s, unnest(%s::uuid[]), 'rt-' || gen_random_uuid(), 'track', unnest(%s::text[]), "
            "'{\"category\": \"shoes\", \"product_id\": \"sku-1\"}'::jsonb, '{\"timezone\": \"Europe/Berlin\"}'::jsonb",
            [now, now, profile_ids, names])


def raw_queries(profile_ids: list, event_names: list[str]) -> float:
    from segments.evaluation import evaluation_statement
    from segments.services.realtime import _segment_ids, affected_segments

    began = time.perf_counter()
    now = timezone.now()
    with connection.cursor() as cursor:
        for segment in affected_segments(event_names=event_names):
            statement = evaluation_statement(segment.definition, now=now, segment_ids=_segment_ids(segment),
                                             profile_ids=profile_ids)
            statement.execute(cursor)
            cursor.fetchall()
    return time.perf_counter() - began


def main() -> None:
    from segments.services.realtime import realtime_evaluate

    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    ids = prepare(args.profiles)
    rng = random.Random(5)
    ours, raw, changes, evaluated = [], [], 0, 0
    for round_number in range(args.rounds + 3):
        batch = rng.sample(ids, args.batch)
        names = [rng.choice(EVENTS) for _ in batch]
        insert_events(batch, names)
        event_names = sorted(set(names))
        began = time.perf_counter()
        result = realtime_evaluate(profile_ids=[str(i) for i in batch], event_names=event_names)
        elapsed = time.perf_counter() - began
        reference = raw_queries(batch, event_names)
        if round_number >= 3:  # the first rounds warm caches
            ours.append(elapsed)
            raw.append(reference)
            changes += result.entered + result.exited
            evaluated += len(result.evaluated)
    ours.sort()
    p95 = ours[int(0.95 * (len(ours) - 1))]
    say(f"RESULT real-time evaluation step, {args.profiles:,} profiles, batches of {args.batch} changed profiles, "
        f"{args.rounds} rounds, {evaluated / len(ours):.1f} affected segments per batch, "
        f"{changes:,} membership changes")
    say(f"  per batch: p50 {statistics.median(ours) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {ours[-1] * 1000:.0f} ms -> {args.batch / statistics.median(ours):,.0f} changed profiles/s per worker")
    say(f"  raw limit (the same restricted queries, no writes): p50 {statistics.median(raw) * 1000:.0f} ms; "
        f"ratio ours / raw = {statistics.median(ours) / statistics.median(raw):.2f}")
    per_second = 1000 / args.batch  # about one changed profile per event at this rate
    say(f"  at 1,000 events/s in batches of {args.batch} ({per_second:g} batches/s), one worker is busy "
        f"{per_second * statistics.median(ours) * 100:.0f} % of the time (p50)")


if __name__ == "__main__":
    main()
