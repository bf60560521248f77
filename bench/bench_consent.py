"""Consent hot paths, each with its raw limit measured in the same run (own database `cdp_bench`,
or BENCH_DATABASE_URL):

1. ledger appends (canonical JSON + SHA-256 chain + COPY + current-consent upserts), records/s
   vs a raw COPY of the very same rows into a same-shaped table;
2. chain verification, records/s vs a bare SELECT of the same rows;
3. `profiles_allowed` for 10,000 profile ids vs a bare primary-key lookup of the same ids;
4. a segment-style COUNT with `consent_condition` ANDed in vs the same COUNT without it;
5. `message_minimise` on a track message with 3 rules vs a bare `dict(message)` copy.

    .venv/bin/python bench/bench_consent.py [--profiles 100000]

The bench database's ledger is emptied first (it sets cdp.allow_ledger_truncate for its own
session, which only a bench or test database should ever do).
"""

import argparse
import io
import os
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

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from psycopg import sql  # noqa: E402

from cdp import crypto  # noqa: E402
from cdp.reference_data import reference_data_ensure  # noqa: E402
from consent import reference  # noqa: E402
from consent.enforcement import consent_condition, message_minimise, profiles_allowed  # noqa: E402
from consent.models import MinimisationRule, Purpose  # noqa: E402
from consent.services import ledger  # noqa: E402
from profiles.services import profiles_wipe  # noqa: E402

CONSENT_TABLES = "consent_profileconsent, consent_subjectconsent, consent_subjectlink, consent_suppressionentry, " \
                 "consent_consentrecord"


def reset() -> None:
    call_command("migrate", interactive=False, verbosity=0)
    profiles_wipe()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL cdp.allow_ledger_truncate = 'on'")
        cursor.execute(f"TRUNCATE {CONSENT_TABLES} CASCADE")  # noqa: S608 - constant
    reference_data_ensure()


def load_people(count: int) -> list[tuple]:
    """Profiles with one anonymous id each, by COPY (what the bench needs, nothing more)."""
    now = datetime.now(UTC)
    people = []
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy("COPY profiles_profile (id, created_at, updated_at, first_seen_at, last_seen_at, gender, "
                      "country, city, postcode, income_band, language, occupation, last_device_type, last_os, "
                      "last_browser, traits) FROM STDIN") as copy:
            for index in range(count):
                profile_id = uuid.UUID(int=index + 1, version=4)
                people.append((profile_id, f"anon-{index}"))
                copy.write_row((profile_id, now, now, now, now, "", "DE", "", "", "", "", "", "", "", "", "{}"))
        with raw.copy("COPY profiles_identity (profile_id, kind, value_hash, value, first_seen_at, last_seen_at) "
                      "FROM STDIN") as copy:
            for profile_id, anonymous_id in people:
                copy.write_row((profile_id, "anonymous_id", crypto.keyed_hash("anonymous_id", anonymous_id),
                                anonymous_id, now, now))
        cursor.execute("ANALYZE profiles_profile; ANALYZE profiles_identity")
    return people


def bench_append(people) -> tuple[float, int]:
    purposes = [reference.purpose_id("analytics"), reference.purpose_id("personalization")]
    start_time = datetime.now(UTC) - timedelta(days=30)
    records = [ledger.RecordInput(subject_kind="anonymous_id", subject_hash=crypto.keyed_hash("anonymous_id", anon),
                                  purpose_id=purpose, granted=(index + purpose) % 3 != 0, source="web_banner",
                                  method="save", decided_at=start_time + timedelta(seconds=index),
                                  page_url="https://shop.example/", user_agent="bench")
               for index, (_, anon) in enumerate(people) for purpose in purposes]
    began = time.perf_counter()
    for first in range(0, len(records), 20_000):
        with transaction.atomic():
            ledger.ledger_append(records[first:first + 20_000])
    return time.perf_counter() - began, len(records)


def raw_copy_reference(count: int) -> float:
    """COPY the ledger rows just written, exported as text, into a same-shaped table."""
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy("COPY consent_consentrecord TO STDOUT") as copy:
            for block in copy:
                buffer.write(block)
        cursor.execute("DROP TABLE IF EXISTS bench_raw_consent")
        cursor.execute("CREATE TABLE bench_raw_consent (LIKE consent_consentrecord INCLUDING DEFAULTS "
                       "INCLUDING INDEXES INCLUDING CONSTRAINTS)")
        began = time.perf_counter()
        with transaction.atomic(), raw.copy("COPY bench_raw_consent FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        seconds = time.perf_counter() - began
        cursor.execute("SELECT count(*) FROM bench_raw_consent")
        assert cursor.fetchone()[0] == count
        cursor.execute("DROP TABLE bench_raw_consent")
    return seconds


def bench_verify(count: int) -> tuple[float, float]:
    began = time.perf_counter()
    result = ledger.ledger_verify(head_dir=Path("/nonexistent"))
    verify_seconds = time.perf_counter() - began
    assert result.is_intact and result.records_checked == count, result.summary()
    began = time.perf_counter()
    with connection.cursor() as cursor:
        last = 0
        while True:
            cursor.execute(ledger._VERIFY_SQL, [last, 5000])
            rows = cursor.fetchall()
            if not rows:
                break
            last = rows[-1][0]
    return verify_seconds, time.perf_counter() - began


def timed(function, repeat: int) -> float:
    function()  # warm
    began = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - began) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", type=int, default=100_000)
    args = parser.parse_args()
    reset()
    people = load_people(args.profiles)

    seconds, count = bench_append(people)
    copy_seconds = raw_copy_reference(count)
    print(f"1. ledger append: {count:,} records in {seconds:.1f} s = {count / seconds:,.0f} records/s "
          f"(chain + COPY + state tables)")
    print(f"   raw COPY of the same rows, same indexes: {copy_seconds:.2f} s = {count / copy_seconds:,.0f} rows/s"
          f"   ratio {copy_seconds / seconds:.2f}")

    verify_seconds, select_seconds = bench_verify(count)
    print(f"2. chain verification: {count / verify_seconds:,.0f} records/s ({verify_seconds:.1f} s); bare SELECT "
          f"of the rows {count / select_seconds:,.0f} rows/s   ratio {select_seconds / verify_seconds:.2f}")

    ids = [p for p, _ in people[: min(10_000, len(people))]]
    allowed = timed(lambda: profiles_allowed(profile_ids=ids, purpose="personalization"), 20)

    def bare_lookup():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM profiles_profile WHERE id = ANY(%s::uuid[])", [[str(i) for i in ids]])
            cursor.fetchall()

    bare = timed(bare_lookup, 20)
    print(f"3. profiles_allowed for {len(ids):,} ids: {allowed * 1000:.1f} ms; bare primary-key lookup of the "
          f"same ids {bare * 1000:.1f} ms   ratio {bare / allowed:.2f}")

    condition = consent_condition(profile_column=sql.Identifier("p", "id"), purposes=["personalization"])
    with_consent = sql.SQL("SELECT count(*) FROM profiles_profile p WHERE p.country = %s AND {}").format(
        condition.sql)

    def count_query(query, params):
        with connection.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchone()[0]

    rendered = with_consent.as_string(connection.connection)
    granted = count_query(rendered, ["DE", *condition.params])
    gated = timed(lambda: count_query(rendered, ["DE", *condition.params]), 10)
    plain = timed(lambda: count_query("SELECT count(*) FROM profiles_profile p WHERE p.country = %s", ["DE"]), 10)
    print(f"4. segment COUNT over {len(people):,} profiles with the consent condition: {gated * 1000:.0f} ms "
          f"({granted:,} granted); without it {plain * 1000:.0f} ms   ratio {plain / gated:.2f}")

    purposes = {p.key: p for p in Purpose.objects.all()}
    MinimisationRule.objects.all().delete()
    MinimisationRule.objects.create(field_path="context.ip", purpose=purposes["analytics"])
    MinimisationRule.objects.create(event_type="track", field_path="properties.email", action="hash",
                                    purpose=purposes["email_marketing"])
    MinimisationRule.objects.create(event_type="identify", field_path="traits.phone", purpose=purposes["analytics"])
    reference.cache_clear()
    message = {"type": "track", "event": "viewed", "userId": "u1", "properties": {"email": "a@b.example", "sku": "1"},
               "context": {"ip": "203.0.113.5", "locale": "de-DE", "page": {"url": "https://shop.example/"}}}
    loops = 100_000
    began = time.perf_counter()
    for _ in range(loops):
        message_minimise(message, granted_purposes=("personalization",))
    minimise = (time.perf_counter() - began) / loops
    began = time.perf_counter()
    for _ in range(loops):
        dict(message)
    copy = (time.perf_counter() - began) / loops
    print(f"5. message_minimise (3 rules, 2 apply): {minimise * 1e6:.1f} µs/message = {1 / minimise:,.0f}/s; "
          f"bare dict copy {copy * 1e6:.2f} µs   ratio {copy / minimise:.2f}")


if __name__ == "__main__":
    main()
