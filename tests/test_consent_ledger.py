"""The consent ledger: append-only in the app and in the database, hash-chained, verified."""

import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, connections, transaction

from consent.models import AppendOnlyError, ConsentRecord, NoticeVersion
from consent.services import ledger
from tests.consent_helpers import decide, superuser_sql


@pytest.fixture
def heads(tmp_path, settings) -> Path:
    settings.CDP_CONSENT_HEAD_DIR = tmp_path / "heads"
    return settings.CDP_CONSENT_HEAD_DIR


def _ten_records():
    for index in range(5):
        decide("email", f"person{index}@example.com", {"analytics": True, "email_marketing": index % 2 == 0})
    assert ConsentRecord.objects.count() == 10


def test_canonical_serialisation_is_fixed_and_documented():
    row = {"sequence": 7, "prev_hash": bytes(range(32)), "subject_kind": "email", "subject_hash": b"\x01" * 32,
           "purpose_id": 3, "granted": True, "source": "api", "method": "accept", "notice_id": 2,
           "notice_sha256": "ab" * 32, "captured_at": datetime(2026, 11, 22, 9, 30, 1, 250000, tzinfo=UTC),
           "client_timestamp": None, "decided_at": datetime(2026, 11, 22, 9, 30, 1, 250000, tzinfo=UTC),
           "page_url": "https://shop.example/privacy", "user_agent": "Mozilla/5.0", "ip_hash": None,
           "actor_id": None, "actor_key_id": 4, "tc_string": "", "tcf": None, "details": {"b": 1, "a": "ä"}}
    expected = ('{"actor":{"key":4,"user":null},"captured_at":"2026-11-22T09:30:01.250000Z","client_timestamp":null,'
                '"decided_at":"2026-11-22T09:30:01.250000Z","details":{"a":"ä","b":1},"evidence":{"ip_hash":null,'
                '"page_url":"https://shop.example/privacy","user_agent":"Mozilla/5.0"},"granted":true,"method":"accept",'
                '"notice":{"id":2,"sha256":"' + "ab" * 32 + '"},"prev":"' + bytes(range(32)).hex() + '","purpose":3,'
                '"seq":7,"source":"api","subject":{"hash":"' + "01" * 32 + '","kind":"email"},"tc_string":"",'
                '"tcf":null,"v":1}')
    assert ledger.canonical(row) == expected.encode()
    import hashlib
    assert ledger.record_hash(row) == hashlib.sha256(expected.encode()).digest()


def test_each_record_carries_the_hash_of_the_one_before(db):
    _ten_records()
    records = list(ConsentRecord.objects.order_by("sequence"))
    assert [r.sequence for r in records] == list(range(1, 11))
    assert bytes(records[0].prev_hash) == ledger.GENESIS
    for before, after in zip(records, records[1:], strict=False):
        assert bytes(after.prev_hash) == bytes(before.record_hash)
    result = ledger.ledger_verify(head_dir=Path("/nonexistent"))
    assert (result.is_intact, result.records_checked, result.last_sequence) == (True, 10, 10)


def test_floats_and_nul_characters_cannot_enter_a_record(db):
    record = ledger.RecordInput(subject_kind="email", subject_hash=b"\x00" * 32, purpose_id=1, granted=True,
                                source="api", method="accept", details={"score": 0.5})
    with pytest.raises(ValueError, match="floats are not allowed"):
        ledger.ledger_append([record])
    assert ConsentRecord.objects.count() == 0


@pytest.mark.parametrize("statement", [
    "UPDATE consent_consentrecord SET granted = NOT granted WHERE sequence = 1",
    "DELETE FROM consent_consentrecord WHERE sequence = 2",
    "TRUNCATE consent_consentrecord CASCADE",
    "UPDATE consent_noticeversion SET text = 'changed'",
    "DELETE FROM consent_noticeversion",
])
def test_the_database_refuses_changes_to_the_ledger_and_notices(db, statement):
    NoticeVersion.objects.create(key="web-banner", version="1", language="en", text="We use cookies.")
    _ten_records()
    before = list(ConsentRecord.objects.order_by("sequence").values_list("sequence", "granted", "record_hash"))
    with transaction.atomic(), connection.cursor() as cursor:
        # The test database allows TRUNCATE for Django's flush; production never sets this.
        cursor.execute("SET LOCAL cdp.allow_ledger_truncate = 'off'")
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses to run over pending FK checks
        with pytest.raises(IntegrityError, match="refused: the consent ledger is append-only"), transaction.atomic():
            cursor.execute(statement)
    assert list(ConsentRecord.objects.order_by("sequence").values_list("sequence", "granted",
                                                                       "record_hash")) == before
    assert NoticeVersion.objects.get().text == "We use cookies."


def test_the_app_refuses_changes_too(db):
    _ten_records()
    record = ConsentRecord.objects.get(sequence=3)
    record.granted = not record.granted
    with pytest.raises(AppendOnlyError):
        record.save()
    with pytest.raises(AppendOnlyError):
        record.delete()
    with pytest.raises(AppendOnlyError):
        ConsentRecord.objects.filter(sequence=3).update(granted=False)
    with pytest.raises(AppendOnlyError):
        ConsentRecord.objects.all().delete()
    notice = NoticeVersion.objects.create(key="web-banner", version="1", language="en", text="Text")
    notice.text = "Other"
    with pytest.raises(AppendOnlyError):
        notice.save()
    assert ConsentRecord.objects.count() == 10
    assert ConsentRecord.objects.get(sequence=3).granted == (not record.granted)
    assert NoticeVersion.objects.get().text_sha256 == NoticeVersion.digest("Text")


def test_an_edited_row_is_reported_at_exactly_that_row(db, heads):
    _ten_records()
    ledger.ledger_head_export()
    superuser_sql("UPDATE consent_consentrecord SET granted = NOT granted WHERE sequence = 6")
    result = ledger.ledger_verify()
    assert result.first_broken.sequence == 6
    assert "content does not match its record_hash" in result.first_broken.reason
    assert result.records_checked == 5
    with pytest.raises(CommandError, match="BROKEN at record 6: content does not match"):
        call_command("verify_consent_ledger")


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(db, heads):
    _ten_records()
    superuser_sql("UPDATE consent_consentrecord SET granted = NOT granted WHERE sequence = 4")
    row = _row(4)
    superuser_sql("UPDATE consent_consentrecord SET record_hash = %s WHERE sequence = 4", [ledger.record_hash(row)])
    result = ledger.ledger_verify()
    assert result.first_broken.sequence == 5
    assert "prev_hash does not match" in result.first_broken.reason


def _row(sequence: int) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(ledger._VERIFY_SQL, [sequence - 1, 1])
        row = dict(zip(ledger._VERIFY_NAMES, cursor.fetchone(), strict=True))
    row["tcf"], row["details"] = ledger._json_value(row["tcf"]), ledger._json_value(row["details"])
    return row


def test_a_removed_middle_record_is_reported(db, heads):
    _ten_records()
    superuser_sql("DELETE FROM consent_subjectconsent WHERE record_id = 7")  # its reference goes first
    superuser_sql("DELETE FROM consent_consentrecord WHERE sequence = 7")
    result = ledger.ledger_verify()
    assert result.first_broken.sequence == 7
    assert result.first_broken.reason == "record 7 is missing (next present is 8)"


def test_a_removed_tail_is_caught_by_the_exported_head(db, heads):
    _ten_records()
    path = ledger.ledger_head_export(now=datetime(2026, 11, 21, 0, 5, tzinfo=UTC))
    assert path.name == "consent-ledger-head-2026-11-21.json"
    assert orjson.loads(path.read_bytes())["sequence"] == 10
    superuser_sql("DELETE FROM consent_subjectconsent WHERE record_id > 8")  # references to the tail go first
    superuser_sql("DELETE FROM consent_consentrecord WHERE sequence > 8")
    # The chain that is left is internally consistent: only the head file shows what is gone.
    assert ledger.ledger_verify(head_dir=heads / "none").is_intact
    result = ledger.ledger_verify()
    assert result.first_broken is None
    assert result.head_problem == ("the ledger ends at record 8, but head file consent-ledger-head-2026-11-21.json "
                                   "(exported 2026-11-21T00:05:00.000000Z) names record 10: records were removed "
                                   "from the end")
    with pytest.raises(CommandError, match="records were removed from the end"):
        call_command("verify_consent_ledger")


def test_a_forged_head_file_is_reported(db, heads):
    _ten_records()
    path = ledger.ledger_head_export()
    payload = orjson.loads(path.read_bytes())
    payload["sequence"] = 9
    path.write_bytes(orjson.dumps(payload))
    result = ledger.ledger_verify()
    assert result.head_problem == f"head file {path.name} is not valid: signature does not match"


def test_a_rewritten_chain_differs_from_the_head(db, heads):
    _ten_records()
    ledger.ledger_head_export()
    # Rewrite record 10 and rehash it consistently: the chain verifies, the head does not.
    superuser_sql("UPDATE consent_consentrecord SET granted = NOT granted WHERE sequence = 10")
    superuser_sql("UPDATE consent_consentrecord SET record_hash = %s WHERE sequence = 10",
                  [ledger.record_hash(_row(10))])
    result = ledger.ledger_verify()
    assert result.first_broken is None
    assert "record 10 differs from head file" in result.head_problem


def test_the_command_reports_an_intact_chain(db, heads, capsys):
    _ten_records()
    ledger.ledger_head_export()
    call_command("verify_consent_ledger")
    assert "intact: 10 records, chain head 10, 1 exported head(s) match" in capsys.readouterr().out


def test_concurrent_appends_queue_up_instead_of_forking_the_chain(transactional_db, heads):
    errors = []

    def append(worker: int):
        try:
            for index in range(15):
                decide("user_id", f"w{worker}-{index}", {"analytics": True})
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list(ConsentRecord.objects.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, 61))
    result = ledger.ledger_verify()
    assert (result.is_intact, result.records_checked) == (True, 60)
