"""Segment-keys lookup (`GET /v1/segments?anonymous_id=…`) against a bare Django view returning a
constant, both served by the same gunicorn (same workers, same middleware) in the same run.

Targets: the lookup's maximum throughput is at least 65 % of the bare view's, and its p99 latency
is under 10 ms at a steady 500 requests/s.

- Data: 100,000 profiles with anonymous ids, all of them with personalization granted (lookups
  answer only for those), 6 segments exposed to the bench source, in the database
  `cdp_bench_lookup` on the embedded server (or BENCH_DATABASE_URL).
- Server: gunicorn, 4 sync workers (as PERF-NOTES), with Redis as the cache when it answers on
  BENCH_REDIS_URL (default redis://127.0.0.1:6379/6), which is the production configuration;
  the uncached path (CDP_SEGMENT_LOOKUP_CACHE_SECONDS=0) is measured too, for information.
- Maximum throughput: wrk (Debian package `wrk`: apt-get install wrk), 2 threads, 16
  connections, 10 s, visitors drawn at random from 10,000 (a warm working set); the bare view
  and the lookup alternate for 3 rounds and the best of each is compared.
- Latency at 500 requests/s: an open-loop asyncio client on keep-alive connections that sends on
  a fixed schedule and measures from the scheduled moment (no coordinated omission).

The load generator shares the 2 cores with the server, so absolute figures are understated;
the ratio is what the target is about.

    .venv/bin/python bench/bench_segment_lookup.py [--profiles 100000] [--seconds 10]
"""

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench_lookup"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")
os.environ.pop("REDIS_URL", None)  # the generator itself needs no cache
os.environ["CDP_BROKER_DIR"] = tempfile.mkdtemp(prefix="bench-broker-")

import django  # noqa: E402
import orjson  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from cdp import apikeys, embedded  # noqa: E402
from profiles.identifiers import identity_hash  # noqa: E402
from profiles.models import Source, SourceKey  # noqa: E402

PORT = 8731
WORKING_SET = 10_000
SEGMENTS = [("germans", "country", ["DE"]), ("french", "country", ["FR"]), ("south", "country", ["IT", "ES"]),
            ("mobile", "last_device_type", ["mobile"]), ("young", "age", None), ("newsletter", "traits.newsletter", True)]


def say(text: str) -> None:
    print(text, flush=True)


def prepare(profiles: int) -> str:
    """Profiles with anonymous ids a1..aN, segments computed and exposed; returns a read key."""
    from profiles.services import profiles_wipe
    from segments.models import Segment, SegmentRun
    from segments.services.definitions import segment_create
    from segments.services.recompute import segment_recompute

    call_command("migrate", interactive=False, verbosity=0)
    source, _ = Source.objects.get_or_create(name="Bench web")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_identity WHERE kind = 'anonymous_id'")
        ready = cursor.fetchone()[0] == profiles and Segment.objects.filter(member_count__gt=0).count() == len(SEGMENTS)
        cursor.execute("SELECT count(*) FROM consent_profileconsent WHERE granted")
        ready = ready and cursor.fetchone()[0] == profiles
    if not ready:
        began = time.perf_counter()
        profiles_wipe()
        Segment.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT setseed(0.7)")
            cursor.execute("""
                INSERT INTO profiles_profile (id, created_at, updated_at, gender, country, city, postcode, income_band,
                    language, occupation, last_device_type, last_os, last_browser, traits, age)
                SELECT md5('l' || i)::uuid, now(), now(), '', (ARRAY['DE', 'FR', 'IT', 'ES', 'NL'])[1 + i %% 5], '',
                       '', '', '', '', (ARRAY['mobile', 'desktop'])[1 + i %% 2], '', '',
                       jsonb_build_object('newsletter', i %% 3 = 0), 18 + i %% 60
                FROM generate_series(1, %s) i""", [profiles])
            cursor.execute("SELECT id FROM profiles_profile ORDER BY id")
            ids = [row[0] for row in cursor.fetchall()]
            with cursor.cursor.copy("COPY profiles_identity (profile_id, kind, value_hash, value, source_id, "
                                    "first_seen_at, last_seen_at) FROM STDIN") as copy:
                for index, profile_id in enumerate(ids, start=1):
                    value = f"a{index}"
                    copy.write_row((profile_id, "anonymous_id", identity_hash("anonymous_id", value), value, source.pk,
                                    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"))
            cursor.execute("ANALYZE")
        _grant_personalization()
        for key, field, value in SEGMENTS:
            if field == "age":
                root = {"type": "trait", "field": "age", "operator": "<", "value": 30}
            elif isinstance(value, list):
                root = {"type": "trait", "field": field, "operator": "in", "value": value}
            else:
                root = {"type": "trait", "field": field, "operator": "=", "value": value}
            segment = segment_create(actor=None, key=key, name=key, definition={"version": 1, "root": root},
                                     exposed_source_ids=[source.pk])
            segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
        say(f"  data: {profiles:,} profiles, {len(SEGMENTS)} segments, {time.perf_counter() - began:.0f} s")
    SourceKey.objects.filter(source=source).delete()
    return apikeys.source_key_create(source=source, kind=SourceKey.Kind.READ)[1]


def _grant_personalization() -> None:
    """Every bench visitor has granted personalization: lookups answer only for them (one bulk
    append to the consent ledger, hash chain and current-consent tables as in production)."""
    from consent import reference
    from consent.models import ConsentRecord
    from consent.services import ledger
    from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
    from profiles.models import Profile

    purpose = reference.purpose_id("personalization")
    records = [ledger.RecordInput(subject_kind=PROFILE_SUBJECT, subject_hash=profile_subject_hash(profile_id),
                                  purpose_id=purpose, granted=True, source=ConsentRecord.Source.API,
                                  method=ConsentRecord.Method.ACCEPT, link_profile_id=profile_id)
               for profile_id in Profile.objects.values_list("id", flat=True)]
    for start in range(0, len(records), 20_000):
        ledger.ledger_append(records[start:start + 20_000])


def server_environment(cache_seconds: int, redis_url: str | None) -> dict:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.lookup_settings"
    env["PYTHONPATH"] = str(ROOT)
    if not os.environ.get("BENCH_DATABASE_URL"):
        name = settings.DATABASES["default"]["NAME"]
        server = embedded.ensure_running(settings.CDP_DATA_DIR, name)
        env["DATABASE_URL"] = f"postgresql://{server['user']}@/{name}?host={server['host']}&port={server['port']}"
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["CELERY_BROKER_URL"] = "filesystem://"
    env["CDP_SEGMENT_LOOKUP_CACHE_SECONDS"] = str(cache_seconds)
    return env


class Gunicorn:
    def __init__(self, env: dict, workers: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "cdp.wsgi:application",
             "--bind", f"127.0.0.1:{PORT}", "--workers", str(workers), "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/bench/constant", timeout=2):  # noqa: S310
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("gunicorn did not start")

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def wrk(path: str, seconds: int, headers: dict, script: str | None = None) -> float:
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{PORT}{path}")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{path}: {errors.group(1)} failed responses\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


async def steady_latency(path_for, headers: dict, rate: int, seconds: int) -> dict:
    """Send `rate` requests/s for `seconds` on a fixed schedule; latency from the scheduled time.
    gunicorn's sync workers close the connection after each answer, so each request connects
    (as wrk does against them)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    latencies, failures = [], 0
    start = time.perf_counter()

    async def one(scheduled: float, path: str):
        nonlocal failures
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{head}\r\n".encode())
            answer = await reader.read()
            writer.close()
            if not answer.startswith(b"HTTP/1.1 200"):
                failures += 1
        except OSError:
            failures += 1
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    total = rate * seconds
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, path_for(index))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pick(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {"sent": total, "rate": total / elapsed, "p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99),
            "max": latencies[-1] * 1000, "failures": failures}


def warm(headers: dict) -> None:
    """Look every visitor of the working set up once (bulk), so the cached run measures hits."""
    for first in range(1, WORKING_SET + 1, 1000):
        body = orjson.dumps({"visitors": [{"anonymous_id": f"a{i}"} for i in range(first, first + 1000)]})
        request = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/segments/bulk", data=body, method="POST",
                                         headers={**headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - our own server
            answer.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed for the throughput figures: apt-get install wrk")
    read_key = prepare(args.profiles)
    headers = {"Authorization": f"Bearer {read_key}"}
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6")
    try:
        import redis

        redis.Redis.from_url(redis_url).ping()
    except Exception:  # noqa: BLE001 - no Redis: measure the uncached path only
        say(f"  no Redis at {redis_url}: the cached configuration is not measured")
        redis_url = None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"math.randomseed(42)\nrequest = function()\n  return wrk.format(\"GET\", "
                     f"\"/v1/segments?anonymous_id=a\" .. math.random(1, {WORKING_SET}))\nend\n")
    results = {}
    configurations = ([("cached (Redis)", 300, redis_url)] if redis_url else []) + [("uncached", 0, None)]
    for label, cache_seconds, url in configurations:
        if url:
            import redis

            redis.Redis.from_url(url).flushdb()
        server = Gunicorn(server_environment(cache_seconds, url), args.workers)
        try:
            say(f"{label}: gunicorn {args.workers} sync workers on 127.0.0.1:{PORT}")
            probe = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/segments?anonymous_id=a5", headers=headers)
            with urllib.request.urlopen(probe, timeout=5) as answer:  # noqa: S310 - our own server
                say(f"  probe: {answer.read().decode()}")
            warm(headers)  # every worker process shares the Redis cache
            wrk("/bench/constant", 3, {})  # warm up both paths
            wrk("/v1/segments", 3, headers, script.name)
            # Alternate the two endpoints a few times: on a shared machine another job can take
            # the cores for a while, and back-to-back rounds expose both to the same conditions.
            bares, lookups = [], []
            for _ in range(args.rounds):
                bares.append(wrk("/bench/constant", args.seconds, {}))
                lookups.append(wrk("/v1/segments", args.seconds, headers, script.name))
                say(f"  round: bare view {bares[-1]:,.0f} req/s, lookup {lookups[-1]:,.0f} req/s, "
                    f"ratio {lookups[-1] / bares[-1]:.2f}")
            bare, lookup = max(bares), max(lookups)
            say(f"  max throughput (best of {args.rounds} rounds each): bare view {bare:,.0f} req/s, "
                f"lookup {lookup:,.0f} req/s, ratio {lookup / bare:.2f}")
            rng = random.Random(7)
            paths = [f"/v1/segments?anonymous_id=a{rng.randint(1, WORKING_SET)}" for _ in range(500 * args.seconds)]
            steady = asyncio.run(steady_latency(paths.__getitem__, headers, 500, args.seconds))
            steady_bare = asyncio.run(steady_latency(lambda i: "/bench/constant", {}, 500, args.seconds))
            say(f"  at 500 req/s: lookup p50 {steady['p50']:.1f} ms, p95 {steady['p95']:.1f} ms, "
                f"p99 {steady['p99']:.1f} ms, max {steady['max']:.1f} ms ({steady['rate']:.0f} req/s sent, "
                f"{steady['failures']} failed); bare view p99 {steady_bare['p99']:.1f} ms")
            results[label] = (bare, lookup, steady, steady_bare)
        finally:
            server.stop()
    os.unlink(script.name)
    say("")
    label = configurations[0][0]
    bare, lookup, steady, steady_bare = results[label]
    say(f"RESULT lookup, {args.profiles:,} profiles, {label}, gunicorn {args.workers} sync workers, wrk -t2 -c16")
    say(f"  max throughput: lookup {lookup:,.0f} req/s vs bare Django view {bare:,.0f} req/s -> ratio "
        f"{lookup / bare:.2f} (target >= 0.65) -> {'OK' if lookup / bare >= 0.65 else 'MISSED'}")
    say(f"  p99 at 500 req/s: {steady['p99']:.1f} ms (target < 10 ms) -> {'OK' if steady['p99'] < 10 else 'MISSED'}; "
        f"bare view p99 {steady_bare['p99']:.1f} ms in the same conditions")
    if "uncached" in results and label != "uncached":
        bare_u, lookup_u, steady_u, _ = results["uncached"]
        say(f"  for information, uncached (one PostgreSQL query per lookup): ratio {lookup_u / bare_u:.2f}, "
            f"p99 at 500 req/s {steady_u['p99']:.1f} ms")


if __name__ == "__main__":
    main()
