"""Staging and loading internals of the import: the CSV sent to COPY, and the lock-then-skip of
per-row foreign-key checks (profiles/imports/loading.py)."""

import io
import uuid

import numpy as np
import pandas as pd
import pytest
from django.db import IntegrityError, connection

from profiles.imports.loading import csv_data, csv_text, references_vouch
from profiles.models import Profile, Source


def test_csv_text_writes_what_pandas_to_csv_wrote():
    frame = pd.DataFrame({
        "number": [1, 2, 3],
        "text": pd.array(["x,y", None, 'say "hi"'], dtype="string"),
        "amount": [1.5, np.nan, 123456789012.34],
        "quantity": pd.array([1, None, 3], dtype="Int64"),
        "free": ["", "two\nlines", "a b"],
        "at": pd.to_datetime(["2024-01-01", None, "2024-02-02"], utc=True),
        "hash": ["\\x00ff", "\\x01", None],
        "flag": [True, False, None],
    })
    expected = io.StringIO()
    frame.to_csv(expected, header=False, index=False, na_rep="")
    assert csv_text(frame) == expected.getvalue()


def test_csv_text_quotes_a_carriage_return():
    # to_csv left a lone CR unquoted, which COPY refuses ("unquoted carriage return found in data").
    assert csv_text(pd.DataFrame({"a": ["cr\rhere", "x"], "b": [1, 2]})) == '"cr\rhere",1\nx,2\n'


def test_csv_data_loads_the_same_rows_as_csv_text(db):
    frame = pd.DataFrame({
        "number": [1, -2, 3],
        "text": pd.array(["x,y", None, 'say "hi"'], dtype="string"),
        "amount": [1.5, np.nan, 123456789012.34],
        "quantity": pd.array([1, None, 3], dtype="Int64"),
        "free": ["", "two\nlines", "cr\rhere"],
        "hash": ["\\x00ff", "\\x01", None],
        "flag": pd.array([True, False, None], dtype="boolean"),
    })
    columns = "number bigint, text text, amount numeric(14,2), quantity integer, free text, hash bytea, flag boolean"
    cursor = connection.cursor().cursor
    loaded = []
    for name, data in (("by_text", csv_text(frame)), ("by_arrow", csv_data(frame))):
        cursor.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")
        with cursor.copy(f"COPY {name} FROM STDIN (FORMAT csv)") as copy:
            copy.write(data)
        cursor.execute(f"SELECT * FROM {name} ORDER BY number")
        loaded.append(cursor.fetchall())
    assert isinstance(csv_data(frame), bytes)  # the Arrow path took this frame
    assert loaded[0] == loaded[1]
    assert [row[4] for row in loaded[0]] == ["two\nlines", None, "cr\rhere"]  # an empty text is NULL, as before


@pytest.fixture
def target(db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE import_target (profile_id uuid, matched boolean) ON COMMIT DROP")
    return connection.cursor().cursor


def test_references_vouch_locks_matched_profiles_and_the_source(target):
    source = Source.objects.create(name="Stores", kind=Source.Kind.POS)
    profile = Profile.objects.create()
    target.execute("INSERT INTO import_target VALUES (%s, true), (%s, true), (%s, false)",
                   [profile.id, profile.id, uuid.uuid4()])
    assert references_vouch(target, source.id) is True  # the embedded server's role is a superuser
    # FOR KEY SHARE takes RowShareLock on the tables whose rows it locks.
    target.execute("""SELECT relation::regclass::text FROM pg_locks
                      WHERE pid = pg_backend_pid() AND mode = 'RowShareLock' AND relation IN
                          ('profiles_profile'::regclass, 'profiles_source'::regclass) ORDER BY 1""")
    assert [row[0] for row in target.fetchall()] == ["profiles_profile", "profiles_source"]


def test_references_vouch_refuses_a_matched_profile_that_is_gone(target):
    source = Source.objects.create(name="Stores", kind=Source.Kind.POS)
    target.execute("INSERT INTO import_target VALUES (%s, true)", [uuid.uuid4()])
    with pytest.raises(IntegrityError, match="profile the file matched was deleted"):
        references_vouch(target, source.id)


def test_references_vouch_refuses_a_source_that_is_gone(target):
    with pytest.raises(IntegrityError, match="source was deleted"):
        references_vouch(target, 987654)


def test_insert_absent_skips_rows_a_concurrent_writer_inserted_meanwhile(db):
    from psycopg import sql

    from profiles.imports.loading import _insert_absent

    cursor = connection.cursor().cursor
    cursor.execute("CREATE TEMP TABLE t_orders (order_id text UNIQUE) ON COMMIT DROP")
    cursor.execute("INSERT INTO t_orders VALUES ('B')")  # the other writer's order
    statement = sql.SQL("INSERT INTO t_orders SELECT unnest(%s::text[])")
    assert _insert_absent(cursor, statement, "(order_id)", [["A", "B", "C"]]) == 2
    assert _insert_absent(cursor, statement, "(order_id)", [["D"]]) == 1
    cursor.execute("SELECT order_id FROM t_orders ORDER BY 1")
    assert [row[0] for row in cursor.fetchall()] == ["A", "B", "C", "D"]


def test_staged_identifier_hashes_are_the_identity_hashes():
    """Each row gets its own identifier's keyed hash (COPY text) and stored value, missing ones
    None, also for values remembered from an earlier chunk."""
    from profiles.identifiers import identity_hash
    from profiles.imports.loading import Stager

    stager = Stager.__new__(Stager)  # the hashing only: no stage table
    stager._digests = {}
    first = pd.Series(["C1", "", "ünïcode", None, "C1"], dtype="str")
    second = pd.Series(["C9", "C1"], dtype="str")
    for column in (first, second):
        hashes, stored = stager._identifiers("crm_id", column)
        expected = ["\\x" + identity_hash("crm_id", v).hex() if isinstance(v, str) and v else None
                    for v in column.tolist()]
        assert list(hashes) == expected
        assert list(stored) == [v if isinstance(v, str) and v else None for v in column.tolist()]
