"""Sustained ingestion through the real HTTP stack (target: >= 30 % of raw COPY; p99 < 100 ms
at half that rate).

Runs in its own database (`cdp_bench` on the embedded server, or BENCH_DATABASE_URL):

1. raw limit: a single-connection psycopg COPY of the very rows ingestion writes (built by the
   ingestion code itself) into the same `profiles_event` table, same partitions and indexes;
2. throughput: gunicorn (sync workers, the production server) serving `/v1/batch`, driven by
   wrk (closed loop, 2 threads; a Lua script puts fresh messageIds in every body), or with
   `--loadgen python` by a multi-process Python generator (http.client), posting batches of 100
   track events (as segment-analytics-python sends them, with the consent context analytics.js'
   consent wrapper adds: `context.consent.categoryPreferences` on every message), each with
   fresh messageIds; so every request goes through the consent gate (preferences compared with
   the ledger's current state, analytics and suppression checked for every message);
3. latency: the same generator paced open-loop at half the measured rate; latencies count from
   the scheduled send time, so a stalled server cannot hide its queueing (no coordinated
   omission);
4. check: every event answered 200 is in the table exactly once.

Prints events/s, the ratio to raw COPY, latency percentiles and the web workers' memory. The
load generator shares the two cores with the server, so server figures are understated.

    .venv/bin/python bench/bench_ingestion.py [--workers 4] [--clients 6] [--seconds 20]
"""

import argparse
import http.client
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
    os.environ["CDP_DATABASE_NAME"] = "cdp_bench"
os.environ.setdefault("CDP_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from cdp import apikeys  # noqa: E402
from profiles.ingestion import writer  # noqa: E402
from profiles.ingestion.normalisation import message_normalise  # noqa: E402
from profiles.ingestion.validation import message_check  # noqa: E402
from profiles.models import Source, SourceKey  # noqa: E402
from profiles.partitions import event_partitions_ahead  # noqa: E402
from profiles.services import profiles_wipe  # noqa: E402

BATCH = 100
# What Segment's consent wrapper puts on every message (the workspace's category names).
CONSENT = {"categoryPreferences": {"Advertising": False, "Analytics": True, "Functional": True, "Marketing": False}}
TOKEN = b"@@@@@@@@@@@@"  # replaced per request by a 12-digit number: fresh messageIds every time


def message(i: int, token: str = TOKEN.decode(), fresh: bool = False) -> dict:
    """A track event shaped like segment-analytics-python's, with the consent context (about 440
    bytes as JSON)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    return {
        "type": "track", "event": "Product Viewed", "userId": None,
        # A returning visitor (consent already recorded), or with --fresh-visitors a new one per
        # request, whose consent context the ledger has to record first.
        "anonymousId": f"new-{token}-{i:03d}" if fresh else str(uuid.UUID(int=i * 7919 + 1)),
        "messageId": f"{token}-{i:03d}",
        "timestamp": now,
        "properties": {"product_id": f"SKU-{i % 50:04d}", "category": "Shoes", "price": 59.9},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "consent": CONSENT},
        "integrations": {},
    }


def body_template(fresh_visitors: int = 0) -> bytes:
    sent_at = datetime.now(UTC).isoformat()
    return orjson.dumps({"batch": [message(i, fresh=i < fresh_visitors) for i in range(BATCH)], "sentAt": sent_at})


def database_url() -> str:
    params = connection.get_connection_params()
    host, port = params.get("host") or "", params.get("port") or 5432
    user = params.get("user") or "postgres"
    auth = f"{user}:{params['password']}@" if params.get("password") else f"{user}@"
    if host.startswith("/"):
        return f"postgresql://{auth}/{params['dbname']}?host={host}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{params['dbname']}"


def event_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_event")
        return cursor.fetchone()[0]


def reset_tables() -> None:
    profiles_wipe()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE profiles_eventdedupe, profiles_droppedeventcount")


def raw_copy_reference(source_id: int, rows_wanted: int, *, first: int = 0) -> float:
    """rows/s of one COPY of ingestion's own rows into profiles_event (the caller empties it again)."""
    received_at = datetime.now(UTC)
    rows = []
    for n in range(rows_wanted // BATCH):
        for i in range(BATCH):
            item = orjson.loads(orjson.dumps(message(i, token=f"{first + n:012d}")))
            checked, _ = message_check(item, path_type=None)
            normalised, _ = message_normalise(checked, item, source_id=source_id, received_at=received_at,
                                              envelope_sent_at=received_at.isoformat())
            rows.append(normalised.row)
    connection.set_autocommit(False)
    began = time.perf_counter()
    with connection.cursor() as cursor:
        writer.events_copy(cursor.cursor, rows)
    connection.commit()
    seconds = time.perf_counter() - began
    connection.set_autocommit(True)
    return len(rows) / seconds


# -- load generator (runs in child processes; no Django, no database) --------------------------

def _send(conn_holder: list, host: str, port: int, body: bytes, headers: dict) -> bool:
    for attempt in range(2):
        if conn_holder[0] is None:
            conn_holder[0] = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn_holder[0].request("POST", "/v1/batch", body, headers)
            response = conn_holder[0].getresponse()
            response.read()
            if response.getheader("Connection", "").lower() == "close":
                conn_holder[0].close()
                conn_holder[0] = None
            return response.status == 200
        except (ConnectionError, http.client.HTTPException, OSError):
            conn_holder[0].close()
            conn_holder[0] = None
            if attempt:
                raise
    return False


def client_run(task: tuple) -> tuple[int, int, list[float]]:
    """Post batches until `until`; closed loop (interval None) or paced open loop."""
    index, host, port, auth, template, start, until, interval, offset = task
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    holder: list = [None]
    ok = failed = counter = 0
    latencies = []
    while time.time() < start:
        time.sleep(0.001)
    scheduled = start + offset
    while True:
        if interval is not None:
            delay = scheduled - time.time()
            if delay > 0:
                time.sleep(delay)
            began = scheduled
            scheduled += interval
        else:
            began = time.time()
        if began >= until:
            break
        counter += 1
        body = template.replace(TOKEN, b"%03d%09d" % (index, counter))
        if _send(holder, host, port, body, headers):
            ok += 1
        else:
            failed += 1
        latencies.append(time.time() - began)
    return ok, failed, latencies


def load(pool, *, clients: int, host: str, port: int, auth: str, template: bytes, seconds: float,
         rate: float | None, first_index: int) -> tuple[int, int, list[float], float]:
    start = time.time() + 0.5
    interval = clients / rate if rate else None
    tasks = [(first_index + i, host, port, auth, template, start, start + seconds, interval,
              (interval or 0) * i / clients) for i in range(clients)]
    results = pool.map(client_run, tasks)
    elapsed = max(time.time(), start + seconds) - start
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    return ok, failed, latencies, elapsed


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] * 1000 if values else float("nan")


# -- wrk: the light closed-loop generator (its C client leaves the cores to the server) ------------

WRK_SCRIPT = r"""
local parts, thread_id, counter = {}, 0, 0
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  local file = assert(io.open(args[1], "rb"))
  local template = file:read("*a")
  file:close()
  local token = args[2]
  local start = 1
  while true do
    local first, last = string.find(template, token, start, true)
    if not first then break end
    table.insert(parts, string.sub(template, start, first - 1))
    start = last + 1
  end
  table.insert(parts, string.sub(template, start))
  thread_id = id + tonumber(args[3])
end
function request()
  counter = counter + 1
  local body = table.concat(parts, string.format("%03d%09d", thread_id, counter))
  return wrk.format("POST", "/v1/batch", nil, body)
end
"""


def _wrk_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk_load(*, port: int, auth: str, template: bytes, seconds: float, connections: int,
             first_index: int) -> tuple[int, int, float, float, float]:
    """(requests answered 2xx, failed, elapsed s, p50 ms, p99 ms) of a closed-loop wrk run."""
    with tempfile.TemporaryDirectory() as folder:
        body, script = Path(folder, "body.json"), Path(folder, "batch.lua")
        body.write_bytes(template)
        script.write_text(WRK_SCRIPT)
        command = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "--timeout", "10s",
                   "-H", f"Authorization: {auth}", "-H", "Content-Type: application/json", "-s", str(script),
                   f"http://127.0.0.1:{port}/v1/batch", "--", str(body), TOKEN.decode(), str(first_index)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in ([\d.]+)(s|m)", output).group(1))
    elapsed = float(re.search(r"requests in ([\d.]+)s", output).group(1))
    failed = int(re.search(r"Non-2xx or 3xx responses: (\d+)", output).group(1)) if "Non-2xx" in output else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed += sum(int(n) for n in errors.groups()) if errors else 0
    p50 = _wrk_ms(re.search(r"50%\s+(\S+)", output).group(1))
    p99 = _wrk_ms(re.search(r"99%\s+(\S+)", output).group(1))
    return total - failed, failed, elapsed, p50, p99


# -- where the CPU goes -------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _process_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        table[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return table


def _tree_seconds(table: dict, root: int) -> float:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0.0))[1]
        stack.extend(children.get(pid, []))
    return total


def _machine_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS  # all but idle and iowait


def cpu_snapshot(web_pid: int, postmaster_pid: int | None) -> dict[str, float]:
    table = _process_table()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"web": _tree_seconds(table, web_pid), "postgres": _tree_seconds(table, postmaster_pid) if postmaster_pid
            else 0.0, "wrk": children.ru_utime + children.ru_stime, "machine": _machine_seconds()}


def postmaster_pid() -> int | None:
    """The embedded server's postmaster (its backends are its children); None for another server."""
    if os.environ.get("BENCH_DATABASE_URL"):
        return None
    from django.conf import settings

    pidfile = Path(settings.CDP_DATA_DIR) / "pg" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


# -- gunicorn -----------------------------------------------------------------------------------

def start_gunicorn(workers: int, port: int) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=database_url(), CDP_LOG_LEVEL="WARNING")
    env.pop("CDP_DATABASE_NAME", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "cdp.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers",
         str(workers), "--worker-class", "sync", "--backlog", "2048", "--log-level", "warning"],
        cwd=BASE_DIR, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("POST", "/v1/m", b"{}")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("gunicorn did not start")


def worker_memory_mb(master_pid: int) -> list[float]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    sizes = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (make run's default)")
    parser.add_argument("--clients", type=int, default=6, help="load generator processes")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured phase")
    parser.add_argument("--copy-rows", type=int, default=200_000, help="rows in the raw COPY reference")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                        help="closed-loop generator for the throughput phase (the latency phase is always paced "
                             "by the Python generator)")
    parser.add_argument("--fresh-visitors", type=int, default=0,
                        help="messages per batch from a visitor never seen (consent recorded in the ledger)")
    args = parser.parse_args()

    call_command("migrate", interactive=False, verbosity=0)
    event_partitions_ahead(months_ahead=1)
    reset_tables()
    source, _ = Source.objects.get_or_create(name="Bench source", defaults={"kind": Source.Kind.SERVER})
    Source.objects.filter(pk=source.pk).update(events_per_minute_limit=2_000_000_000, is_active=True)
    _, key = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    import base64

    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    template = body_template(args.fresh_visitors)

    load_before = os.getloadavg()[0]
    copy_before = raw_copy_reference(source.id, args.copy_rows)
    assert event_count() == args.copy_rows
    reset_tables()

    connection.close()  # the load generator forks; it never touches the database
    server = start_gunicorn(args.workers, args.port)
    try:
        with multiprocessing.get_context("fork").Pool(args.clients) as pool:
            common = {"clients": args.clients, "host": "127.0.0.1", "port": args.port, "auth": auth,
                      "template": template}
            load(pool, seconds=3, rate=None, first_index=0, **common)  # warm-up: imports, connections
            master = postmaster_pid()
            cpu_before = cpu_snapshot(server.pid, master)
            if args.loadgen == "wrk":
                ok, failed, elapsed, closed_p50, closed_p99 = wrk_load(
                    port=args.port, auth=auth, template=template, seconds=args.seconds, connections=args.clients,
                    first_index=100)
            else:
                ok, failed, latencies, elapsed = load(pool, seconds=args.seconds, rate=None, first_index=100,
                                                      **common)
                closed_p50, closed_p99 = percentile(latencies, .5), percentile(latencies, .99)
            cpu_after = cpu_snapshot(server.pid, master)
            rate = ok * BATCH / elapsed
            half = rate / 2
            ok2, failed2, latencies2, elapsed2 = load(pool, seconds=args.seconds, rate=half / BATCH,
                                                      first_index=200, **common)
        memory = worker_memory_mb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    stored = event_count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(count), 0) FROM profiles_droppedeventcount")
        dropped_total = cursor.fetchone()[0]
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) - count(DISTINCT message_id) FROM profiles_event")
        duplicates = cursor.fetchone()[0]
    # The raw limit again, after the HTTP phases: the machine is shared, so its load drifts.
    copy_after = raw_copy_reference(source.id, args.copy_rows, first=10**9)
    load_after = os.getloadavg()[0]
    reset_tables()
    copy_rate = (copy_before + copy_after) / 2
    print(f"raw COPY reference: {args.copy_rows:,} ingestion rows into profiles_event, one connection: "
          f"{copy_before:,.0f} rows/s before, {copy_after:,.0f} rows/s after the HTTP phases "
          f"(mean {copy_rate:,.0f}); load average {load_before:.1f} -> {load_after:.1f}")
    generator = (f"wrk, 2 threads, {args.clients} connections" if args.loadgen == "wrk"
                 else f"{args.clients} Python client processes")
    print(f"HTTP: gunicorn {args.workers} sync workers, {generator} (half-rate phase: {args.clients} paced Python "
          f"clients), POST /v1/batch of "
          f"{BATCH} track events ({len(template) / 1024:.1f} KB), every message with its consent context; "
          f"{args.fresh_visitors} new visitor(s) per batch")
    print(f"  throughput        {rate:10,.0f} events/s  ({ok * BATCH / elapsed / BATCH:,.0f} requests/s, "
          f"{failed} failed, {args.seconds:.0f} s)")
    print(f"  ratio to raw COPY {rate / copy_rate:10.2f}   (target >= 0.30 -> "
          f"{'OK' if rate / copy_rate >= 0.30 else 'MISSED'})")
    print(f"  closed-loop latency ms: p50 {closed_p50:.1f}  p99 {closed_p99:.1f}")
    used = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    requests_done = max(1, ok + failed)
    parts = [("web workers", used["web"]), ("PostgreSQL", used["postgres"])]
    if args.loadgen == "wrk":
        parts.append(("wrk", used["wrk"]))
    parts.append(("everything else on the machine", used["machine"] - sum(value for _, value in parts)))
    print(f"  CPU in the closed-loop phase ({used['machine']:.1f} s busy of {os.cpu_count()} cores x {elapsed:.0f} s): "
          + ", ".join(f"{name} {value:.1f} s ({value / requests_done * 1000:.2f} ms/request)" for name, value in parts))
    achieved = ok2 * BATCH / elapsed2
    p99 = percentile(latencies2, .99)
    print(f"  at half rate ({half:,.0f} events/s offered, {achieved:,.0f} achieved, {failed2} failed): "
          f"p50 {percentile(latencies2, .5):.1f} ms  p90 {percentile(latencies2, .9):.1f} ms  p99 {p99:.1f} ms  "
          f"max {percentile(latencies2, 1):.1f} ms  (target p99 < 100 ms -> {'OK' if p99 < 100 else 'MISSED'})")
    print(f"  web worker memory (RSS): {', '.join(f'{m:.0f}' for m in memory)} MB; "
          f"total {sum(memory):.0f} MB")
    answered = (ok + ok2) * BATCH
    print(f"  check: events in the table {stored:,}; answered 200 after warm-up {answered:,} "
          f"(+ warm-up) -> {'OK' if stored >= answered else 'LOST EVENTS'}")
    print(f"  duplicates stored: {duplicates}; events dropped for lack of consent: {dropped_total}")
    print("Machine shared with other work; the load generator runs on the same 2 cores.")


if __name__ == "__main__":
    main()
