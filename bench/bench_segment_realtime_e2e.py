"""Real-time segments end to end: an event accepted by the ingestion API -> the visitor's new
segment visible in the lookup API, at a steady 1,000 events/s (target: p95 under 1 s).

The whole system runs as in production: gunicorn (4 sync workers) serving `POST /v1/batch` and
`GET /v1/segments`, real Celery workers on Redis: one for the default queue (prefork,
`--concurrency` processes, 3 by default: the tasks wait on PostgreSQL much of the time; identity
resolution, which queues the real-time changes) and one for the `realtime` queue (the drainer,
`--realtime-concurrency` 1; 0 = the first worker serves both queues), the lookup cache in Redis.

- Data (database `cdp_bench_realtime_e2e`, reused while it matches): the demo shop
  (`--profiles`, 90 days), the seven template segments plus `probe_viewers` ("did probe_viewed
  in the last hour"), all exposed to the bench source; every demo profile has granted analytics
  and personalization (one bulk ledger append).
- Background load: sender processes post batches of 50 track events (product_viewed,
  added_to_cart, checkout_started, page views) of random demo visitors on a fixed schedule
  adding up to `--rate` events/s. Every message carries `context.consent.categoryPreferences`
  ({"analytics": true, "personalization": true}) as analytics.js's consent wrapper sends it.
- Probes: one at a time, at most twice a second, a demo visitor not yet in `probe_viewers` sends
  one probe_viewed event; from the moment its POST answered 200 (accepted) a poller asks the
  lookup API every 20 ms until `probe_viewers` is in the answer. That interval is the figure.
- Raw limit in the same run: the same probes on the idle system (no background load, after two
  unmeasured warm-up probes: a fresh worker process imports the code base on its first task) — the
  pipeline's floor on this machine (task hand-offs, resolution, evaluation, lookup), then the
  loaded run; the ratio loaded / idle is printed.

The load generator and the pollers share the 2 cores with the server, the worker and PostgreSQL.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/5 .venv/bin/python bench/bench_segment_realtime_e2e.py \\
        [--profiles 20000] [--rate 1000] [--seconds 60]
"""

import argparse
import base64
import http.client
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench_realtime_e2e"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")
os.environ.pop("REDIS_URL", None)  # set-up only: its tasks go to a throw-away queue
os.environ["CDP_BROKER_DIR"] = tempfile.mkdtemp(prefix="bench-broker-")

import django  # noqa: E402
import orjson  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from cdp import embedded  # noqa: E402

PORT = 8741
HOST = "127.0.0.1"
BATCH = 50
PROBE_SEGMENT = "probe_viewers"
CONSENT = {"categoryPreferences": {"analytics": True, "personalization": True}}
EVENTS = ["product_viewed", "product_viewed", "product_viewed", "added_to_cart", "checkout_started", "Home"]
TOKEN = b"@@@@@@@@@@@@@@@@"  # replaced per request: fresh messageIds every time
LIBRARY = "cdp-bench-e2e"  # context.library.name of this bench's events


def say(text: str) -> None:
    print(text, flush=True)


# -- data ----------------------------------------------------------------------------------------

def prepare(profiles: int) -> tuple[int, list[str]]:
    """Demo data, segments and consent; returns (source id, anonymous ids of the demo visitors)."""
    from profiles.models import Profile, Source
    from segments.models import Segment

    call_command("migrate", interactive=False, verbosity=0)
    source, _ = Source.objects.get_or_create(name="Bench e2e shop")
    ready = (Profile.objects.count() >= profiles and Segment.objects.filter(key=PROBE_SEGMENT).exists()
             and Segment.objects.filter(exposed_sources=source).count() == Segment.objects.count())
    if not ready:
        _generate(profiles, source)
    else:
        _reset()
    with connection.cursor() as cursor:
        # One anonymous id per demo visitor; probes pick among visitors who never sent a probe
        # event (earlier runs used some).
        cursor.execute(
            "SELECT DISTINCT ON (i.profile_id) i.value FROM profiles_identity i JOIN profiles_profile p "
            "ON p.id = i.profile_id WHERE i.kind = 'anonymous_id' AND p.merged_into_id IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM profiles_event e WHERE e.name = 'probe_viewed' AND e.anonymous_id = i.value) "
            "ORDER BY i.profile_id, i.id")
        visitors = [row[0] for row in cursor.fetchall()]
    return source.pk, visitors


def _generate(profiles: int, source) -> None:
    from profiles.demo.generator import DemoOptions, demo_generate
    from profiles.services import profiles_wipe
    from segments.models import SegmentRun
    from segments.presets import PRESETS, preset_definition
    from segments.services.definitions import segment_create
    from segments.services.recompute import segment_recompute

    began = time.perf_counter()
    profiles_wipe()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE segments_segment, segments_segmentrun, segments_membership, "
                       "segments_membershipchange, segments_timer, segments_webhookdelivery CASCADE")
    demo_generate(options=DemoOptions(profiles=profiles, days=90, seed=11))
    _grant_consent()
    definitions = {key: preset_definition(key) for key in PRESETS}
    definitions[PROBE_SEGMENT] = {"version": 1, "root": {
        "type": "event", "event": "probe_viewed", "window": {"last": 1, "unit": "hours"},
        "count": {"operator": ">=", "value": 1}}}
    for key, definition in definitions.items():
        segment = segment_create(actor=None, key=key, name=key, definition=definition,
                                 exposed_source_ids=[source.pk])
        segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    say(f"  demo data, consent and {len(definitions)} segments in {time.perf_counter() - began:.0f} s")


def _reset() -> None:
    """Forget earlier runs (their events would pile up on the same 20,000 visitors: thousands
    each after a few runs, where a real site's 1,000 events/s come from far more people) and
    recompute every segment from the demo data."""
    from django.utils import timezone

    from segments.models import Segment, SegmentRun
    from segments.services.recompute import segment_recompute

    began = time.perf_counter()
    with connection.cursor() as cursor:
        # Everything but the demo shop's own events (message ids "dem…"): earlier runs, probes.
        cursor.execute("DELETE FROM profiles_event WHERE message_id NOT LIKE 'dem%%'")
        cursor.execute("TRUNCATE segments_realtimechange")
        cursor.execute("VACUUM ANALYZE profiles_event")
    for segment in Segment.objects.all():
        run = SegmentRun.objects.create(segment=segment, trigger="bench", requested_at=timezone.now())
        assert segment_recompute(run_id=run.pk).status == "succeeded"
    say(f"  earlier runs' events removed and segments recomputed in {time.perf_counter() - began:.0f} s")


def _grant_consent() -> None:
    """Analytics and personalization granted by every demo profile (one append; the hash chain
    and the current-consent tables as in production)."""
    from consent import reference
    from consent.models import ConsentRecord
    from consent.services import ledger
    from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
    from profiles.models import Profile

    purposes = [reference.purpose_id("analytics"), reference.purpose_id("personalization")]
    records = [ledger.RecordInput(subject_kind=PROFILE_SUBJECT, subject_hash=profile_subject_hash(profile_id),
                                  purpose_id=purpose, granted=True, source=ConsentRecord.Source.API,
                                  method=ConsentRecord.Method.ACCEPT, link_profile_id=profile_id)
               for profile_id in Profile.objects.values_list("id", flat=True) for purpose in purposes]
    for start in range(0, len(records), 20_000):
        ledger.ledger_append(records[start:start + 20_000])


def keys(source_id: int) -> tuple[str, str]:
    from cdp import apikeys
    from profiles.models import Source, SourceKey

    source = Source.objects.get(pk=source_id)
    SourceKey.objects.filter(source=source).delete()
    write = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]
    read = apikeys.source_key_create(source=source, kind=SourceKey.Kind.READ)[1]
    return write, read


# -- processes -------------------------------------------------------------------------------------

def environment(redis_url: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=redis_url,
               CDP_LOG_LEVEL=os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"))
    env.pop("CDP_BROKER_DIR", None)
    env.pop("CELERY_BROKER_URL", None)
    if not os.environ.get("BENCH_DATABASE_URL"):
        name = settings.DATABASES["default"]["NAME"]
        server = embedded.ensure_running(settings.CDP_DATA_DIR, name)
        env["DATABASE_URL"] = f"postgresql://{server['user']}@/{name}?host={server['host']}&port={server['port']}"
    env.pop("CDP_DATABASE_NAME", None)
    return env


class Processes:
    """gunicorn and a Celery worker, each in its own process group, stopped together."""

    def __init__(self, env: dict, workers: int, concurrency: int, realtime_concurrency: int):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-e2e-", suffix=".log", delete=False)  # noqa: SIM115 - open while the children run
        options = {"cwd": ROOT, "env": env, "start_new_session": True, "stdout": self.log, "stderr": subprocess.STDOUT}
        self.children = [
            subprocess.Popen([sys.executable, "-m", "gunicorn", "cdp.wsgi:application", "--bind", f"{HOST}:{PORT}",
                              "--workers", str(workers), "--log-level", "warning"], **options),
            self._worker(concurrency, ["celery"] if realtime_concurrency else ["celery", "realtime"], "main", options),
        ]
        if realtime_concurrency:  # segments' real-time queue served by its own worker
            self.children.append(self._worker(realtime_concurrency, ["realtime"], "realtime", options))
        say(f"  server and worker output: {self.log.name}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                connection_ = http.client.HTTPConnection(HOST, PORT, timeout=2)
                connection_.request("GET", "/v1/segments")
                connection_.getresponse().read()
                if any(child.poll() is not None for child in self.children):
                    break
                time.sleep(3)  # the worker's processes start too
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"gunicorn or the worker did not start; see {self.log.name}")

    @staticmethod
    def _worker(concurrency: int, queues: list[str], name: str, options: dict) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "cdp", "worker", "--pool", "prefork",
                                 "--concurrency", str(concurrency), "-Q", ",".join(queues), "--without-gossip",
                                 "--without-mingle", "--without-heartbeat", "--loglevel",
                                 os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING"),
                                 "--hostname", f"bench-e2e-{name}-{os.getpid()}@%h"], **options)

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


# -- HTTP (no Django below: the senders run in child processes) ------------------------------------

def post_batch(body: bytes, auth: str) -> int:
    connection_ = http.client.HTTPConnection(HOST, PORT, timeout=30)
    try:
        connection_.request("POST", "/v1/batch", body, {"Authorization": auth, "Content-Type": "application/json"})
        response = connection_.getresponse()
        response.read()
        return response.status
    finally:
        connection_.close()


def lookup_keys(anonymous_id: str, auth: str) -> list[str]:
    connection_ = http.client.HTTPConnection(HOST, PORT, timeout=30)
    try:
        connection_.request("GET", f"/v1/segments?anonymous_id={anonymous_id}", headers={"Authorization": auth})
        response = connection_.getresponse()
        return orjson.loads(response.read()).get("segments", [])
    finally:
        connection_.close()


def message(visitor: str, name: str, token: str, *, now: str) -> dict:
    """A track (or page) message shaped like analytics.js's, consent context included."""
    base = {"anonymousId": visitor, "messageId": token, "timestamp": now,
            "context": {"library": {"name": LIBRARY, "version": "5.2.0"}, "consent": CONSENT,
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) bench"}}
    if name == "Home":
        return {**base, "type": "page", "name": "Home", "properties": {"path": "/"}}
    return {**base, "type": "track", "event": name,
            "properties": {"product_id": f"sku-{hash(token) % 300}", "category": "shoes", "price": 49.0}}


def bodies(visitors: list[str], count: int, seed: int) -> list[bytes]:
    """Request bodies with a token in every messageId (replaced per request); sentAt = timestamp, so
    the server's clock-skew correction puts every event at its arrival time."""
    rng = random.Random(seed)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    result = []
    for _ in range(count):
        batch = [message(rng.choice(visitors), rng.choice(EVENTS), f"{TOKEN.decode()}-{i:02d}", now=now)
                 for i in range(BATCH)]
        result.append(orjson.dumps({"batch": batch, "sentAt": now}))
    return result


def sender(index: int, templates: list[bytes], auth: str, start: float, interval: float, stop, results) -> None:
    """Post `templates` round-robin every `interval` seconds from `start` until `stop` is set."""
    ok = failed = counter = 0
    latencies = []
    scheduled = start
    run = int(start * 1000) % 16**6  # messageIds unique across runs: duplicates are stored once
    while not stop.is_set():
        delay = scheduled - time.time()
        if delay > 0:
            time.sleep(delay)
        counter += 1
        body = templates[counter % len(templates)].replace(TOKEN, b"%06x%02d%08d" % (run, index, counter))
        began = time.time()
        try:
            status = post_batch(body, auth)
        except OSError:
            status = 0
        latencies.append(time.time() - began)
        ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
        scheduled += interval
    results.put((ok, failed, latencies, time.time() - start))


class Probes:
    """Probe visitors: send one probe_viewed event, then poll the lookup until it shows."""

    def __init__(self, visitors: list[str], write_auth: str, read_auth: str, trace=None):
        self.visitors = visitors
        self.write_auth, self.read_auth = write_auth, read_auth
        self.latencies: list[float] = []
        self.timeouts = 0
        self.lock = threading.Lock()
        self.trace = trace  # a Trace: time each stage of every probe (diagnostics, adds queries)

    def one(self, visitor: str, timeout: float = 15.0) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        body = orjson.dumps({"batch": [message(visitor, "probe_viewed", str(uuid.uuid4()), now=now)], "sentAt": now})
        if post_batch(body, self.write_auth) != 200:
            raise RuntimeError("a probe event was not accepted")
        accepted = time.monotonic()
        stages = self.trace.start(visitor) if self.trace else None
        while time.monotonic() - accepted < timeout:
            if stages is not None:
                self.trace.look(stages, accepted)
            if PROBE_SEGMENT in lookup_keys(visitor, self.read_auth):
                with self.lock:
                    self.latencies.append(time.monotonic() - accepted)
                if stages is not None:
                    self.trace.done(stages, time.monotonic() - accepted)
                return
            time.sleep(0.02)
        with self.lock:
            self.timeouts += 1

    def run(self, seconds: float, per_second: float) -> None:
        """One probe at a time (so the pollers add at most 50 lookups/s whatever the latency), a
        new one every 1 / `per_second` s or as soon as the previous one is visible."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.visitors:
            began = time.monotonic()
            self.one(self.visitors.pop())
            time.sleep(max(0.0, began + 1 / per_second - time.monotonic()))


class Trace:
    """`--trace`: when each stage of a probe became visible in the database, polled with the
    lookup (ms after the POST was accepted): event attached to a profile (resolution committed),
    membership row open (real-time batch committed), lookup answered with the segment."""

    STAGES = ("resolved", "member", "visible")

    def __init__(self):
        import psycopg

        params = connection.get_connection_params()
        self.db = psycopg.connect(**{key: value for key, value in params.items() if key != "cursor_factory"},
                                  autocommit=True)
        self.segment_id = self.db.execute("SELECT id FROM segments_segment WHERE key = %s",
                                          [PROBE_SEGMENT]).fetchone()[0]
        self.rows: list[dict] = []

    def start(self, visitor: str) -> dict:
        return {"visitor": visitor, "profile": None}

    def look(self, stages: dict, accepted: float) -> None:
        elapsed = (time.monotonic() - accepted) * 1000
        if stages["profile"] is None:
            # Index: profiles_event (name, timestamp).
            row = self.db.execute("SELECT profile_id FROM profiles_event WHERE name = 'probe_viewed' AND timestamp > "
                                  "now() - interval '1 hour' AND anonymous_id = %s", [stages["visitor"]]).fetchone()
            if row and row[0]:
                stages["profile"], stages["resolved"] = row[0], elapsed
        if stages["profile"] is not None and "member" not in stages and self.db.execute(
                "SELECT 1 FROM segments_membership WHERE segment_id = %s AND profile_id = %s AND version_to IS NULL",
                [self.segment_id, stages["profile"]]).fetchone():
            stages["member"] = elapsed

    def done(self, stages: dict, seconds: float) -> None:
        stages["visible"] = seconds * 1000
        self.rows.append(stages)

    def summary(self) -> str:
        lines = []
        for stage in self.STAGES:
            values = [row[stage] / 1000 for row in self.rows if stage in row]
            lines.append(f"    {stage:>8}: p50 {percentile(values, 0.5):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
                         f"max {percentile(values, 1.0):.0f} ms ({len(values)} seen)")
        slow = sorted(self.rows, key=lambda row: row["visible"])[-5:]
        lines.append("    slowest: " + "; ".join(
            "/".join(f"{row.get(stage, float('nan')):.0f}" for stage in self.STAGES) for row in slow))
        return "\n".join(lines)


class ActivitySampler(threading.Thread):
    """`--trace`: what PostgreSQL's active backends are running, sampled 20 times a second (a
    poor man's profile of where the database's time goes: no pg_stat_statements here)."""

    def __init__(self):
        super().__init__(daemon=True)
        import psycopg

        params = connection.get_connection_params()
        self.db = psycopg.connect(**{key: value for key, value in params.items() if key != "cursor_factory"},
                                  autocommit=True)
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.samples += 1
            for (query,) in self.db.execute("SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM "
                                            "pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                                            "AND backend_type = 'client backend'").fetchall():
                self.counts[query] = self.counts.get(query, 0) + 1
        self.db.close()

    def summary(self, top: int = 15) -> str:
        ranked = sorted(self.counts.items(), key=lambda item: -item[1])[:top]
        return "\n".join(f"    {count / max(1, self.samples):5.2f} backends  {query}" for query, count in ranked)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


class Watch(threading.Thread):
    """Once a second: real-time changes waiting and task messages waiting in the broker."""

    def __init__(self, redis_url: str):
        super().__init__(daemon=True)
        import psycopg
        import redis

        self.redis = redis.Redis.from_url(redis_url)
        params = connection.get_connection_params()
        self.db = psycopg.connect(**{key: value for key, value in params.items() if key != "cursor_factory"},
                                  autocommit=True)
        self.samples: list[tuple[int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            waiting = self.db.execute("SELECT count(*) FROM segments_realtimechange").fetchone()[0]
            self.samples.append((waiting, self.redis.llen("celery") + self.redis.llen("realtime")))
        self.db.close()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        changes, messages = zip(*self.samples, strict=True)
        return (f"changes waiting for real-time evaluation max {max(changes):,}, last {changes[-1]:,}; "
                f"task messages in the broker max {max(messages):,}, last {messages[-1]:,}")


class CpuMeter:
    """CPU seconds used by each part of the system between `start()` and `stop()`."""

    def __init__(self, processes: "Processes"):
        import psutil

        postmaster = next(p for p in psutil.process_iter(["cmdline"])
                          if str(embedded.pgdata_path(settings.CDP_DATA_DIR)) in " ".join(p.info["cmdline"] or []))
        self.own = "bench (senders, probes)"
        self.groups = {"gunicorn": processes.children[0].pid, "celery worker": processes.children[1].pid}
        if len(processes.children) > 2:
            self.groups["real-time worker"] = processes.children[2].pid
        self.groups.update({"postgres": postmaster.pid, self.own: os.getpid()})

    def _sample(self) -> dict[str, float]:
        import psutil

        def tree(pid: int) -> list:
            try:
                root = psutil.Process(pid)
                return [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return []

        def seconds(processes) -> float:
            total = 0.0
            for process in processes:
                try:  # children_*: processes that ended (and were waited for) count too
                    times = process.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
                except psutil.NoSuchProcess:
                    continue
            return total

        trees = {name: tree(pid) for name, pid in self.groups.items()}
        others = {process.pid for name, found in trees.items() if name != self.own for process in found}
        trees[self.own] = [process for process in trees[self.own] if process.pid not in others]
        return {name: seconds(found) for name, found in trees.items()}

    def start(self) -> None:
        self.began, self.first = time.monotonic(), self._sample()

    def stop(self) -> str:
        elapsed, last = time.monotonic() - self.began, self._sample()
        parts = [f"{name} {(last[name] - self.first[name]) / elapsed:.2f}" for name in self.groups]
        return "CPU cores used: " + ", ".join(parts) + f" (of 2; over {elapsed:.0f} s)"


def backlog() -> tuple[int, int]:
    """(events not yet attached to a profile, events received in the last 2 minutes)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FILTER (WHERE profile_id IS NULL), count(*) FROM profiles_event "
                       "WHERE received_at > now() - interval '2 minutes'")
        return cursor.fetchone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000, help="background events per second")
    parser.add_argument("--seconds", type=int, default=60, help="measured period under load")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--concurrency", type=int, default=3,
                        help="Celery worker processes (the tasks wait on PostgreSQL much of the time)")
    parser.add_argument("--realtime-concurrency", type=int, default=1,
                        help="processes of a second worker serving only the `realtime` queue (0: none, the "
                             "first worker serves both queues)")
    parser.add_argument("--idle-probes", type=int, default=20)
    parser.add_argument("--trace", action="store_true",
                        help="time each stage of every probe (adds a few queries per poll: diagnostics only)")
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    source_id, visitors = prepare(args.profiles)
    random.Random(3).shuffle(visitors)
    write, read = keys(source_id)
    # Segment's libraries send the write key as the HTTP Basic user name.
    write_auth = "Basic " + base64.b64encode(f"{write}:".encode()).decode()
    read_auth = f"Bearer {read}"
    warmup_probes = 2  # unmeasured: a fresh worker process imports the code base on its first task
    probes_needed = warmup_probes + args.idle_probes + 2 * args.seconds
    background_visitors, probe_visitors = visitors[probes_needed:], visitors[warmup_probes:probes_needed]
    warmup_visitors = visitors[:warmup_probes]
    processes = Processes(environment(redis_url), args.workers, args.concurrency, args.realtime_concurrency)
    try:
        say(f"system: gunicorn {args.workers} sync workers, Celery worker --concurrency {args.concurrency}"
            + (f" and a real-time worker (-Q realtime) --concurrency {args.realtime_concurrency}"
               if args.realtime_concurrency else " on both queues") + f", Redis {redis_url}")
        warming = Probes(warmup_visitors, write_auth, read_auth)
        for visitor in warmup_visitors:
            warming.one(visitor)
        say(f"  warm-up: {len(warming.latencies)} unmeasured probes: "
            + ", ".join(f"{x * 1000:.0f} ms" for x in warming.latencies))
        idle = Probes(probe_visitors[:args.idle_probes], write_auth, read_auth, Trace() if args.trace else None)
        for visitor in list(idle.visitors):  # one at a time: the idle floor
            idle.visitors.remove(visitor)
            idle.one(visitor)
        say(f"  idle: {len(idle.latencies)} probes, p50 {percentile(idle.latencies, 0.5):.0f} ms, "
            f"p95 {percentile(idle.latencies, 0.95):.0f} ms, max {percentile(idle.latencies, 1.0):.0f} ms; in order (ms): "
            + ", ".join(f"{x * 1000:.0f}" for x in idle.latencies))
        if idle.trace:
            say(idle.trace.summary())
        loaded = Probes(probe_visitors[args.idle_probes:], write_auth, read_auth, Trace() if args.trace else None)
        interval = args.senders * BATCH / args.rate
        warmup = 10
        start = time.time() + 1
        context = multiprocessing.get_context("fork")  # the senders use no database connection
        stop, results = context.Event(), context.Queue()
        senders = [context.Process(target=sender, args=(index, bodies(background_visitors, 200, index), write_auth,
                                                        start + index * interval / args.senders, interval, stop,
                                                        results)) for index in range(args.senders)]
        for process in senders:
            process.start()
        time.sleep(max(0.0, start + warmup - time.time()))
        unresolved_before, _ = backlog()
        watch = Watch(redis_url)
        watch.start()
        meter = CpuMeter(processes)
        sampler = ActivitySampler() if args.trace else None
        if sampler:
            sampler.start()
        meter.start()
        loaded.run(args.seconds, 2.0)
        cpu = meter.stop()
        if sampler:
            sampler.done.set()
        watch.done.set()
        unresolved_after, received = backlog()
        stop.set()
        outcome = [results.get(timeout=60) for _ in senders]
        for process in senders:
            process.join(10)
        ok = sum(r[0] for r in outcome)
        failed = sum(r[1] for r in outcome)
        post_latencies = [x for r in outcome for x in r[2]]
        elapsed = max(r[3] for r in outcome)
    finally:
        processes.stop()
        redis.Redis.from_url(redis_url).flushdb()
    say("")
    say(f"RESULT real-time end to end, {args.profiles:,} demo profiles, {connection.settings_dict['NAME']}")
    say(f"  background load: {ok * BATCH / elapsed:,.0f} events/s accepted ({ok:,} batches of {BATCH}, {failed} "
        f"failed) over {elapsed:.0f} s; POST /v1/batch p50 {percentile(post_latencies, 0.5):.0f} ms, "
        f"p99 {percentile(post_latencies, 0.99):.0f} ms")
    say(f"  unattached events at the start / end of the measured period: {unresolved_before:,} / "
        f"{unresolved_after:,} (of {received:,} received in the last 2 minutes)")
    say(f"  during the measured period: {watch.summary()}")
    say(f"  {cpu}")
    p95, idle_p95 = percentile(loaded.latencies, 0.95), percentile(idle.latencies, 0.95)
    say(f"  accepted -> visible in the lookup API, {len(loaded.latencies)} probes at {args.rate:,} events/s: "
        f"p50 {percentile(loaded.latencies, 0.5):.0f} ms, p95 {p95:.0f} ms, p99 {percentile(loaded.latencies, 0.99):.0f} ms, "
        f"max {percentile(loaded.latencies, 1.0):.0f} ms, {loaded.timeouts} not visible within 15 s")
    if sampler:
        say("  PostgreSQL active backends by statement (average over the measured period):\n" + sampler.summary())
    if loaded.trace:
        say("  stages of the loaded probes (ms after accepted):\n" + loaded.trace.summary())
    say(f"  raw limit, the same probes on the idle system: p95 {idle_p95:.0f} ms -> ratio loaded / idle "
        f"{p95 / idle_p95:.2f}")
    met = p95 < 1000 and not loaded.timeouts
    say(f"  target p95 < 1,000 ms at a steady {args.rate:,} events/s -> {'OK' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
