"""Identity resolution and the full graph rebuild, against their raw limits in the same run.

1. Resolution: 1,000,000 unresolved events (200,000 anonymous ids, 50,000 user ids; devices
   shared by several users, identify calls with emails, aliases, orders) are resolved by the
   real service in batches (target: under 30 s), consent folded in: every device carries the
   banner decisions that let its events be stored (analytics, and personalization granted or
   withdrawn), some emails a CMP decision, so joins and merges link decisions and record
   conflicts. Raw limit: hand-written SQL that only writes the answer — COPY of (event,
   profile) into a temporary table and one UPDATE of the events.
2. Rebuild: a graph of 2,500,000 identifiers and 1,500,000 active links (1,000,000 people),
   with some drift injected (links written without merging, links switched off without
   splitting), rebuilt by the real service: COPY out, CSR, connected_components, set-based
   repair with COPY in (target: within 5x of connected_components alone, CSR build included,
   on the same edge list in the same run).

Runs in its own database (`cdp_bench` on the embedded server, or BENCH_DATABASE_URL).

    .venv/bin/python bench/bench_identity.py [--events 1000000] [--identifiers 2500000] [--skip-resolve]
"""

import argparse
import os
import resource
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
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

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from cdp import crypto  # noqa: E402
from consent import reference  # noqa: E402
from consent.services import ledger  # noqa: E402
from profiles.identity import rebuild, resolve  # noqa: E402
from profiles.identity.resolve import identity_resolve_batch  # noqa: E402
from profiles.models import Source  # noqa: E402
from profiles.partitions import event_partitions_ensure  # noqa: E402
from profiles.services import profiles_wipe  # noqa: E402

START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 30
EVENT_COLUMNS = ("timestamp", "original_timestamp", "sent_at", "received_at", "source_id", "message_id", "type",
                 "name", "anonymous_id", "user_id", "previous_id", "properties", "traits", "context", "extra")


def _seconds(began: float) -> float:
    return time.perf_counter() - began


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- 1. resolution ------------------------------------------------------------------------------

def events_generate(total: int, seed: int):
    """Rows of unresolved events in sessions (as sites send them), time-ordered, and the orders
    to create as transactions. 50,000 users own 1-3 devices each, the remaining anonymous ids
    are visitors who never log in, 500 kiosks are shared by 5 users each; every device has at
    least one session, a session is a few events minutes apart."""
    rng = np.random.default_rng(seed)
    users, kiosks = 50_000, 500
    devices_per_user = rng.choice([1, 2, 3], users, p=[0.5, 0.35, 0.15])
    owner = np.repeat(np.arange(users), devices_per_user)  # device -> user, for users' devices
    devices = 200_000 - kiosks
    owner = np.concatenate([owner, np.full(devices - len(owner), -1)])  # visitors: no user
    sessions_per_device = 1 + rng.poisson(0.3, devices)
    device_of_session = np.repeat(np.arange(devices), sessions_per_device)
    sessions = len(device_of_session)
    kiosk_sessions = sessions // 100
    session_device = np.concatenate([device_of_session, rng.integers(0, kiosks, kiosk_sessions) + devices])
    session_user = np.concatenate([owner[device_of_session], rng.integers(0, users, kiosk_sessions)])
    sessions += kiosk_sessions
    length = np.maximum(1, rng.poisson(max(total / sessions - 1, 0.0), sessions) + 1)
    while length.sum() > total:  # trim to the exact total, keeping one event per session
        over = int(length.sum() - total)
        longest = np.argsort(length)[-over:]
        length[longest] = np.maximum(1, length[longest] - 1)
    length[rng.integers(0, sessions, int(total - length.sum()))] += 1
    start = rng.integers(0, DAYS * 86400 - 7200, sessions)
    logged_in = (session_user >= 0) & (rng.random(sessions) < 0.7)
    known = session_user >= 0
    _, first_session = np.unique(session_user[known], return_index=True)
    logged_in[np.nonzero(known)[0][first_session]] = True  # every user logs in at least once
    contexts = ['{"device": {"type": "mobile"}, "os": {"name": "iOS"}}',
                '{"device": {"type": "desktop"}, "os": {"name": "Windows"}, "browser": {"name": "Chrome"}}',
                '{"userAgent": "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/130.0 Mobile Safari/537.36"}']
    rows, orders, n = [], [], 0
    for s_index in np.argsort(start, kind="stable"):
        device, user = int(session_device[s_index]), int(session_user[s_index])
        anonymous = f"d-{device}" if device < devices else f"kiosk-{device - devices}"
        user_id = f"u-{user}" if logged_in[s_index] else ""
        context = contexts[device % 3]
        when = START + timedelta(seconds=int(start[s_index]))
        for step in range(int(length[s_index])):
            type_, name, traits, properties, previous, uid = "track", "Page Viewed", "{}", "{}", "", user_id
            if step == 0 and user_id and rng.random() < 0.15:
                type_, name = "identify", ""
                traits = f'{{"email": "User{user}@Mail{user % 50}.de", "plan": "p{user % 3}"}}'
            elif step == 0 and user_id and device < devices and rng.random() < 0.03:
                type_, name, previous = "alias", "", anonymous
            elif rng.random() < 0.012:
                name = "Order Completed"
                properties = f'{{"order_id": "B-{n}", "total": 19.99}}'
                orders.append((f"B-{n}", when))
            rows.append((when, when.isoformat(), when, when + timedelta(milliseconds=50), None, f"bench-{seed}-{n}",
                         type_, name, "" if type_ == "alias" else anonymous, uid, previous, properties, traits,
                         context, "{}"))
            n += 1
            when += timedelta(seconds=int(rng.integers(10, 120)))
    rows.sort(key=lambda row: row[0])
    return rows, orders


CONSENT_TABLES = "consent_profileconsent, consent_subjectconsent, consent_subjectlink, consent_consentrecord"


def consent_reset() -> None:
    """Empty the bench database's ledger and current-consent tables (never done outside a bench or test)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL cdp.allow_ledger_truncate = 'on'")
        cursor.execute(f"TRUNCATE {CONSENT_TABLES} CASCADE")  # noqa: S608 - constant


def consent_decisions(seed: int, devices: int = 199_500, kiosks: int = 500, users: int = 50_000) -> list:
    """Banner decisions of every device (analytics granted; personalization granted 60 %,
    withdrawn 15 %, undecided 25 %) and CMP decisions on 30 % of the users' emails."""
    rng = np.random.default_rng(seed + 7)
    purposes = reference.purposes()
    analytics, personalization = purposes["analytics"].id, purposes["personalization"].id
    email_marketing = purposes["email_marketing"].id
    anonymous = [f"d-{d}" for d in range(devices)] + [f"kiosk-{k}" for k in range(kiosks)]
    choice = rng.choice([1, 0, -1], len(anonymous), p=[0.6, 0.15, 0.25])
    records = []
    for raw, decided in zip(anonymous, choice.tolist(), strict=True):
        digest = crypto.keyed_hash("anonymous_id", raw)
        records.append(ledger.RecordInput("anonymous_id", digest, analytics, True, "web_banner", "save"))
        if decided >= 0:
            records.append(ledger.RecordInput("anonymous_id", digest, personalization, bool(decided), "web_banner",
                                              "save"))
    for user in np.nonzero(rng.random(users) < 0.3)[0].tolist():
        digest = crypto.keyed_hash("email", f"user{user}@mail{user % 50}.de")
        records.append(ledger.RecordInput("email", digest, email_marketing, bool(rng.random() < 0.8), "api", "save"))
    return records


def consent_record(records: list) -> float:
    began = time.perf_counter()
    for start in range(0, len(records), 20_000):
        ledger.ledger_append(records[start:start + 20_000])
    return _seconds(began)


class PhaseClock:
    """Time spent in the resolver's phases (its own methods, timed around the calls; nothing
    else changes): where the resolve time goes, printed with the result."""

    PHASES = ("run", "_identifiers", "_shared_devices", "_interesting_edges", "_lock_and_validate", "_plan",
              "_write", "_traits", "_consent")

    def __init__(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.originals = {name: getattr(resolve._Resolver, name) for name in self.PHASES}

    def __enter__(self):
        for name, method in self.originals.items():
            setattr(resolve._Resolver, name, self._timed(name, method))
        return self

    def __exit__(self, *exc):
        for name, method in self.originals.items():
            setattr(resolve._Resolver, name, method)

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += _seconds(began)
        return timed

    def lines(self, total: float) -> list[str]:
        s = self.seconds
        named = s["_identifiers"] + s["_shared_devices"] + s["_interesting_edges"] + s["_lock_and_validate"] + s[
            "_plan"] + s["_write"]
        return [f"claim + keys, nodes and edges in temporary tables {s['run'] - named:5.1f} s",
                f"identifiers hashed in Python {s['_identifiers']:5.1f} s", f"shared devices detached "
                f"{s['_shared_devices']:5.1f} s", f"edges, profile locks, union-find plan "
                f"{s['_interesting_edges'] + s['_lock_and_validate'] + s['_plan']:5.1f} s",
                f"writes {s['_write'] - s['_traits'] - s['_consent']:5.1f} s (identities, links, merges, the event "
                f"UPDATE, profiles, deferred key checks)", f"traits {s['_traits']:5.1f} s",
                f"consent fold {s['_consent']:5.1f} s", f"commit {total - s['run']:5.1f} s"]


def resolution_bench(total: int, batch: int, seed: int) -> None:
    profiles_wipe()
    consent_reset()
    source, _ = Source.objects.get_or_create(name="Bench web", defaults={"kind": Source.Kind.WEBSITE})
    event_partitions_ensure(start=START.date(), end=(START + timedelta(days=DAYS + 31)).date())
    began = time.perf_counter()
    rows, orders = events_generate(total, seed)
    generated = _seconds(began)
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(f"COPY profiles_event ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row[:4] + (source.id,) + row[5:])
        with raw.copy("COPY profiles_transaction (source_id, order_id, amount, currency, channel, store, timestamp, "
                      "created_at) FROM STDIN") as copy:
            for order_id, when in orders:
                copy.write_row((source.id, order_id, "19.99", "EUR", "web", "", when, when))
        cursor.execute("ANALYZE profiles_event")
    loaded = _seconds(began)
    del rows
    decisions = consent_decisions(seed)
    consent_seconds = consent_record(decisions)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE consent_subjectconsent")

    began = time.perf_counter()
    batches = events = merges = created = flags = 0
    with PhaseClock() as clock:
        while True:
            result = identity_resolve_batch(limit=batch)
            batches += 1
            events += result.events
            merges += result.merges
            created += result.profiles_created
            flags += result.flags
            if result.events < batch:
                break
    resolve_seconds = _seconds(began)

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FILTER (WHERE profile_id IS NULL), count(DISTINCT profile_id) FROM profiles_event")
        pending, attached_profiles = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM profiles_identity")
        identities = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE is_active) FROM profiles_identitylink")
        links, active = cursor.fetchone()
        cursor.execute("SELECT count(*) FILTER (WHERE profile_id IS NOT NULL), count(*) FROM profiles_transaction")
        attached_orders, all_orders = cursor.fetchone()
        cursor.execute("SELECT count(DISTINCT profile_id), count(*) FILTER (WHERE conflict) FROM consent_profileconsent")
        consent_profiles, conflicts = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM consent_subjectlink")
        subject_links = cursor.fetchone()[0]
    raw_seconds = raw_attach_reference()
    check = rebuild.identity_graph_rebuild(dry_run=True)

    print(f"resolution: {events:,} events (200,000 anonymous ids, 50,000 user ids) in {batches} batches of "
          f"{batch:,}")
    print(f"  generated in {generated:.1f} s, loaded with COPY in {loaded:.1f} s ({total / loaded:,.0f} rows/s); "
          f"{len(decisions):,} consent decisions recorded before resolution in {consent_seconds:.1f} s")
    print(f"  resolve time       {resolve_seconds:8.1f} s   (target < 30 s)   -> "
          f"{'OK' if resolve_seconds < 30 else 'MISSED'}")
    print(f"  events/s           {events / resolve_seconds:10,.0f}")
    print(f"  result             {attached_profiles:,} profiles with events, {created:,} created, {merges:,} merges, "
          f"{identities:,} identities, {links:,} links ({active:,} active), {flags:,} flags, "
          f"{attached_orders:,}/{all_orders:,} orders attached, {pending} events left pending")
    print(f"  consent            {clock.seconds['_consent']:8.1f} s of the resolve time folding consent: "
          f"{subject_links:,} identifiers linked, {consent_profiles:,} profiles with decisions, {conflicts:,} merge "
          f"conflicts recorded")
    print("  where the time goes: " + "; ".join(clock.lines(resolve_seconds)))
    print(f"  consistency        rebuild (dry run) finds {check.profiles_absorbed} missed merges and "
          f"{check.profiles_created} missed splits over {check.components:,} components")
    print(f"raw limit: COPY (event, profile) of all {events:,} events + one UPDATE: {raw_seconds:.1f} s = "
          f"{events / raw_seconds:,.0f} rows/s")
    print(f"  ratio resolve time : raw attach time = {resolve_seconds / raw_seconds:.2f}")
    print(f"  peak RSS           {_peak_mb():8.0f} MB")


def raw_attach_reference() -> float:
    """Time to only write the answer: COPY (id, timestamp, profile) in + one UPDATE."""
    with connection.cursor() as cursor:
        raw = cursor.cursor
        data = bytearray()
        with raw.copy("COPY (SELECT id, timestamp, profile_id FROM profiles_event) TO STDOUT") as copy:
            for block in copy:
                data += block
        with transaction.atomic():
            cursor.execute("UPDATE profiles_event SET profile_id = NULL")
        cursor.execute("VACUUM ANALYZE profiles_event")
        began = time.perf_counter()
        with transaction.atomic():
            cursor.execute("CREATE TEMPORARY TABLE bench_attach (id bigint, timestamp timestamptz, profile_id uuid) "
                           "ON COMMIT DROP")
            with raw.copy("COPY bench_attach FROM STDIN") as copy:
                copy.write(bytes(data))
            cursor.execute("ANALYZE bench_attach")
            cursor.execute("UPDATE profiles_event e SET profile_id = a.profile_id FROM bench_attach a "
                           "WHERE e.id = a.id AND e.timestamp = a.timestamp")
        return _seconds(began)


# --- 2. rebuild ---------------------------------------------------------------------------------

def graph_generate(identifiers: int, people: int, seed: int):
    """Trees: `people` components over `identifiers` nodes, identifiers - people edges."""
    rng = np.random.default_rng(seed)
    sizes = np.ones(people, dtype=np.int64)
    extra = rng.choice(people, identifiers - people)  # spread the remaining nodes over the components
    np.add.at(sizes, extra, 1)
    component = np.repeat(np.arange(people), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.arange(identifiers) - starts[component]
    child = np.nonzero(position > 0)[0]
    parent = starts[component[child]] + (rng.random(len(child)) * position[child]).astype(np.int64)
    return component, parent, child


def graph_load(identifiers: int, people: int, seed: int, merges: int, splits: int) -> dict:
    profiles_wipe()
    source, _ = Source.objects.get_or_create(name="Bench web", defaults={"kind": Source.Kind.WEBSITE})
    component, parent, child = graph_generate(identifiers, people, seed)
    profile_ids = [uuid.uuid4() for _ in range(people)]
    now = datetime.now(UTC)
    rng = np.random.default_rng(seed + 1)
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy("COPY profiles_profile (id, created_at, updated_at, first_seen_at, last_seen_at, gender, country, "
                      "city, postcode, income_band, language, occupation, last_device_type, last_os, last_browser, "
                      "traits) FROM STDIN") as copy:
            for profile_id in profile_ids:
                copy.write_row((profile_id, now, now, now, now, "", "", "", "", "", "", "", "", "", "", "{}"))
        hashes = rng.bytes(32 * identifiers)
        with raw.copy("COPY profiles_identity (id, profile_id, kind, value_hash, value, source_id, first_seen_at, "
                      "last_seen_at) FROM STDIN") as copy:
            for n in range(identifiers):
                copy.write_row((n + 1, profile_ids[component[n]], "anonymous_id" if n % 4 else "user_id",
                                hashes[32 * n:32 * n + 32], f"id-{n}", source.id, now, now))
        cursor.execute("SELECT setval(pg_get_serial_sequence('profiles_identity', 'id'), %s)", [identifiers + 1])
        low, high = np.minimum(parent, child) + 1, np.maximum(parent, child) + 1
        with raw.copy("COPY profiles_identitylink (identity_a_id, identity_b_id, rule, source_id, first_seen_at, "
                      "last_seen_at, is_active, deactivation_reason) FROM STDIN") as copy:
            for a, b in zip(low.tolist(), high.tolist(), strict=True):
                copy.write_row((a, b, "same_message", source.id, now, now, True, ""))
        # Drift: links written without merging (missed merges) ...
        others = rng.integers(0, identifiers, (merges, 2))
        drift = [(int(min(a, b)) + 1, int(max(a, b)) + 1) for a, b in others if component[a] != component[b]]
        with raw.copy("COPY profiles_identitylink (identity_a_id, identity_b_id, rule, source_id, first_seen_at, "
                      "last_seen_at, is_active, deactivation_reason) FROM STDIN") as copy:
            for a, b in sorted(set(drift)):
                copy.write_row((a, b, "staff", source.id, now, now, True, ""))
        # ... and links switched off without splitting (missed splits).
        cut = rng.choice(len(child), splits, replace=False)
        cursor.execute("UPDATE profiles_identitylink SET is_active = false WHERE (identity_a_id, identity_b_id) IN "
                       "(SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
                       [low[cut].tolist(), high[cut].tolist()])
    with connection.cursor() as cursor:
        for table in ("profiles_profile", "profiles_identity", "profiles_identitylink"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return {"merges": len(set(drift)), "splits": splits}


def components_reference() -> tuple[float, int, dict]:
    """connected_components alone on the same edge list: identity ids mapped to rows, CSR built,
    components computed (rebuild.components_of, best of 3). Also the rebuild's other phases."""
    phases = {}
    with transaction.atomic(), connection.cursor() as cursor:
        began = time.perf_counter()
        graph = rebuild.graph_copy_out(cursor.cursor)
        phases["copy-out"] = _seconds(began)
        phases["readers"] = graph.readers
    with connection.cursor() as cursor:
        began = time.perf_counter()
        cursor.execute("SELECT (SELECT count(*) FROM profiles_identity), "
                       "(SELECT count(*) FROM profiles_identitylink WHERE is_active)")
        phases["scan"] = _seconds(began)
        # The columns the rebuild needs, read but not sent: what the server cannot avoid (profile_id
        # sits behind three variable-width columns, so every row is deformed that far).
        cursor.execute("SET max_parallel_workers_per_gather = 0")
        began = time.perf_counter()
        cursor.execute("SELECT (SELECT count(id) + count(profile_id) FROM profiles_identity), "
                       "(SELECT count(identity_a_id) + count(identity_b_id) FROM profiles_identitylink WHERE is_active)")
        phases["columns"] = _seconds(began)
        cursor.execute("RESET max_parallel_workers_per_gather")
    best = None
    for _ in range(3):
        began = time.perf_counter()
        count, labels = rebuild.components_of(graph)
        seconds = _seconds(began)
        best = seconds if best is None else min(best, seconds)
    began = time.perf_counter()
    rebuild.repairs_find(graph, count, labels)
    phases["compare"] = _seconds(began)
    return best, count, phases


def rebuild_bench(identifiers: int, seed: int) -> None:
    people = int(identifiers * 0.4)
    began = time.perf_counter()
    drift = graph_load(identifiers, people, seed, merges=1000, splits=20)
    loaded = _seconds(began)
    reference, count, phases = components_reference()
    run = rebuild.identity_graph_rebuild()
    steady = rebuild.identity_graph_rebuild()  # nothing left to repair: copy-out, CSR, components, compare
    print(f"rebuild: {run.identities:,} identifiers, {run.links:,} active links, {run.components:,} components "
          f"(graph loaded in {loaded:.0f} s; drift: {drift['merges']:,} links written without merging, "
          f"{drift['splits']} switched off without splitting)")
    print(f"  rebuild with repairs   {run.seconds:6.2f} s: {run.profiles_absorbed:,} profiles absorbed, "
          f"{run.profiles_created:,} split off, {run.identities_moved:,} identities moved")
    print(f"  rebuild, nothing to do {steady.seconds:6.2f} s ({steady.profiles_absorbed} absorbed, "
          f"{steady.profiles_created} split)")
    print(f"  phases measured apart: copy-out {phases['copy-out']:.2f} s ({phases['readers']} connections), "
          f"components {reference:.2f} s, "
          f"comparison {phases['compare']:.2f} s")
    print(f"  reading the two heaps at all (count(*) of both, one connection): {phases['scan']:.2f} s = "
          f"{phases['scan'] / reference:.1f}x components")
    print(f"  reading the needed columns, not sending them (one connection, no parallel workers): "
          f"{phases['columns']:.2f} s = {phases['columns'] / reference:.1f}x components, "
          f"{phases['columns'] / 2 / reference:.1f}x on two connections at best")
    print(f"raw limit: connected_components alone on the same edge list (ids mapped to rows, CSR build "
          f"included): {reference:.2f} s ({count:,} components)")
    print(f"  ratio rebuild with repairs : components alone = {run.seconds / reference:.1f}   (target <= 5)")
    print(f"  ratio rebuild, nothing to do : components alone = {steady.seconds / reference:.1f}")
    print(f"  peak RSS               {_peak_mb():6.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--identifiers", type=int, default=2_500_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-resolve", action="store_true")
    parser.add_argument("--skip-rebuild", action="store_true")
    args = parser.parse_args()
    from django.conf import settings

    call_command("migrate", interactive=False, verbosity=0)
    if not args.skip_resolve:
        resolution_bench(args.events, args.batch or settings.CDP_IDENTITY_BATCH_SIZE, args.seed)
    if not args.skip_rebuild:
        rebuild_bench(args.identifiers, args.seed)
    profiles_wipe()
    consent_reset()


if __name__ == "__main__":
    main()
