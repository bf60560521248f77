"""`manage.py rotate_encryption_key`: every encrypted column moves to the first key, in batches."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from cdp import crypto
from consent.services import requests
from profiles.models import Identity, Profile
from tests.consent_helpers import make_person

OLD = crypto.generate_key()
NEW = crypto.generate_key()
OLD_ID, NEW_ID = OLD.split(":")[0], NEW.split(":")[0]


def _raw(table: str, column: str, where: str = "TRUE") -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL AND {where} ORDER BY 1")  # noqa: S608
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def data_under_the_old_key(db, settings, users, tmp_path):
    settings.CDP_ENCRYPTION_KEYS = OLD
    settings.MEDIA_ROOT = tmp_path / "media"
    people = [make_person(email=f"p{i}@example.com", phone=f"+44 20 7946 00{i:02d}", user_id=f"u{i}",
                          first_name=f"First{i}", last_name=f"Last{i}") for i in range(7)]
    request = requests.dsr_create(type="access", identifier_kind="email", identifier="p1@example.com",
                                  actor=users["cora"], note="by phone")
    requests.dsr_assign(request=request, actor=users["cora"])
    requests.dsr_access_export(request_id=request.pk)
    return people, request


def test_rotation_reencrypts_every_column_and_file_under_the_new_key(data_under_the_old_key, settings, capsys):
    people, request = data_under_the_old_key
    assert all(value.startswith(f"e1.{OLD_ID}.") for value in _raw("profiles_profile", "first_name"))
    settings.CDP_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    call_command("rotate_encryption_key", "--batch-size", "3")
    output = capsys.readouterr().out
    assert "profiles.Profile.first_name: 7 re-encrypted" in output
    assert "profiles.Identity.value: 14 re-encrypted" in output  # emails and phones, not user ids
    assert "consent.DataSubjectRequest.subject_value: 1 re-encrypted" in output
    assert "access-request files: 1 re-encrypted" in output
    for table, column, where in [("profiles_profile", "first_name", "TRUE"), ("profiles_profile", "last_name", "TRUE"),
                                 ("profiles_identity", "value", "kind IN ('email', 'phone')"),
                                 ("consent_datasubjectrequest", "subject_value", "TRUE"),
                                 ("consent_datasubjectrequest", "note", "TRUE")]:
        values = _raw(table, column, where)
        assert values and all(v.startswith(f"e1.{NEW_ID}.") for v in values), (table, column)
    assert sorted(_raw("profiles_identity", "value", "kind = 'user_id'")) == [f"u{i}" for i in range(7)]
    # The old key can go now: everything still reads.
    settings.CDP_ENCRYPTION_KEYS = NEW
    assert sorted(Profile.objects.values_list("first_name", flat=True)) == [f"First{i}" for i in range(7)]
    emails = [crypto.decrypt(v) for v in Identity.objects.filter(kind="email").values_list("value", flat=True)]
    assert sorted(emails) == [f"p{i}@example.com" for i in range(7)]
    request.refresh_from_db()
    assert request.subject_value == "p1@example.com" and request.note == "by phone"
    assert requests.dsr_result_read(request=request, actor=None).startswith(b"PK")
    # A second run has nothing left to do.
    settings.CDP_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    call_command("rotate_encryption_key")
    assert "profiles.Profile.first_name: 0 re-encrypted" in capsys.readouterr().out


def test_a_value_no_key_opens_is_reported_and_left_alone(data_under_the_old_key, settings):
    settings.CDP_ENCRYPTION_KEYS = NEW  # the old key was removed too early
    with pytest.raises(CommandError, match="could not be decrypted with any configured key"):
        call_command("rotate_encryption_key")
    assert all(v.startswith(f"e1.{OLD_ID}.") for v in _raw("profiles_profile", "first_name"))


def test_dry_run_changes_nothing(data_under_the_old_key, settings, capsys):
    settings.CDP_ENCRYPTION_KEYS = f"{NEW},{OLD}"
    before = _raw("profiles_profile", "first_name")
    call_command("rotate_encryption_key", "--dry-run")
    assert "profiles.Profile.first_name: 7 re-encrypted" in capsys.readouterr().out
    assert _raw("profiles_profile", "first_name") == before
