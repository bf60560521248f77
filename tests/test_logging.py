import json
import logging

from cdp.logging import JsonFormatter, RedactPersonalData, redact


def _render(message, *args, **extra):
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": message, "args": args, **extra})
    RedactPersonalData().filter(record)
    return json.loads(JsonFormatter().format(record))


def test_log_lines_are_json_with_extra_fields():
    line = _render("imported %s rows", 12, source_id=3)
    assert line["msg"] == "imported 12 rows"
    assert line["source_id"] == 3
    assert line["level"] == "INFO"


def test_emails_and_phones_are_masked_in_messages_and_fields():
    line = _render("lookup for %s failed", "Ada.Lovelace@Example.com", note="call +49 151 1234 5678 later")
    assert line["msg"] == "lookup for [email] failed"
    assert line["note"] == "call [phone] later"


def test_redaction_leaves_ids_and_counts_alone():
    assert redact("profile 7b0e0c3e-1f2a-4f3b-9a7c-2d8e6f1a0b3c merged, 12 events") == (
        "profile 7b0e0c3e-1f2a-4f3b-9a7c-2d8e6f1a0b3c merged, 12 events")
