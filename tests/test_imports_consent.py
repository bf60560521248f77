"""Imports and the consent app: consent columns land in the ledger (all or nothing with the file),
bad consent values are row errors, erased people are not recreated unless the file brings new
consent, and statements kept as pending before the ledger existed are handed over."""

import importlib
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from consent.enforcement import profile_purposes, suppressed_identifiers
from consent.models import ConsentRecord, ProfileConsent, SuppressionEntry
from consent.services import requests
from consent.services.ledger import ledger_verify
from profiles.identifiers import identity_hash
from profiles.models import Identity, ImportJob, ImportRowError, Profile, Source
from tests.imports_helpers import _import_dir, error_report, run_import  # noqa: F401 - autouse fixture


@pytest.fixture
def crm(transactional_db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


def _profile_of(kind: str, value: str) -> Profile | None:
    identity = Identity.objects.filter(kind=kind, value_hash=identity_hash(kind, value)).first()
    return identity.profile if identity else None


def _records(job: ImportJob) -> list[tuple]:
    return sorted((r.subject_kind, bytes(r.subject_hash), r.purpose.key, r.granted, r.decided_at, r.source, r.method,
                   r.actor_id, r.details["row"]) for r in ConsentRecord.objects.filter(details__import=f"import {job.id}")
                  .select_related("purpose"))


CONSENT_FILE = (
    b"Customer ID,E-mail,Purpose,Opt in,Consent date\n"
    b"C1,ann@example.com,email_marketing,yes,2024-05-01\n"
    b"C2,bob@example.com,newsletter,no,2024-06-02 10:30\n"
    b"C3,,,,\n"
)


def test_consent_columns_land_in_the_ledger_with_source_import(users, crm, tmp_path):
    job = run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    assert job.status == ImportJob.Status.SUCCEEDED, job.error_message
    assert (job.rows_loaded, job.rows_rejected, job.consents_recorded) == (3, 0, 4)
    may, june = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 2, 10, 30, tzinfo=UTC)
    dan = users["dan"].pk
    # One record per identifier of the row; "newsletter" is an import category of email_marketing.
    assert _records(job) == sorted([
        ("crm_id", identity_hash("crm_id", "C1"), "email_marketing", True, may, "import", "import", dan, 2),
        ("email", identity_hash("email", "ann@example.com"), "email_marketing", True, may, "import", "import", dan, 2),
        ("crm_id", identity_hash("crm_id", "C2"), "email_marketing", False, june, "import", "import", dan, 3),
        ("email", identity_hash("email", "bob@example.com"), "email_marketing", False, june, "import", "import", dan,
         3),
    ])
    ann, bob, cid = (_profile_of("crm_id", c) for c in ("C1", "C2", "C3"))
    assert profile_purposes(profile_id=ann.id)["email_marketing"] is True
    assert profile_purposes(profile_id=bob.id)["email_marketing"] is False
    assert not ProfileConsent.objects.filter(profile=cid).exists()
    verified = ledger_verify(head_dir=tmp_path)
    assert (verified.is_intact, verified.records_checked) == (True, 4)
    again = run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    assert (again.status, again.consents_recorded, again.profiles_created) == ("succeeded", 0, 0)
    assert ConsentRecord.objects.count() == 4


def test_a_bad_consent_value_gives_a_row_error_and_the_rest_loads(users, crm):
    content = (b"Customer ID,E-mail,Purpose,Opt in,Consent date\n"
               b"C1,ann@example.com,email_marketing,yes,2024-05-01\n"
               b"C2,bob@example.com,newsletterz,yes,2024-05-01\n"
               b"C3,cid@example.com,advertising,maybe,2024-05-01\n"
               b"C4,dee@example.com,advertising,no,1985-01-01\n"
               b"C5,eve@example.com,ads,no,2024-05-03\n")
    job = run_import(user=users["dan"], source=crm, kind="crm", content=content)
    assert job.status == ImportJob.Status.SUCCEEDED, job.error_message
    assert error_report(job) == [
        ["3", "Purpose", "newsletterz", "consent: purpose is not a known purpose key or import category"],
        ["4", "Opt in", "maybe", "not yes/no (use yes/no, true/false or 1/0)"],
        ["5", "Consent date", "1985-01-01T00:00:00+00:00", "consent: the consent date is implausibly old"],
    ]
    assert (job.rows_loaded, job.rows_rejected, job.consents_recorded) == (2, 3, 4)
    assert {c for c in ("C1", "C2", "C3", "C4", "C5") if _profile_of("crm_id", c)} == {"C1", "C5"}
    assert sorted((r[0], r[2], r[3], r[8]) for r in _records(job)) == [
        ("crm_id", "advertising", False, 6), ("crm_id", "email_marketing", True, 2),
        ("email", "advertising", False, 6), ("email", "email_marketing", True, 2)]


REFUSE_SUCCESS = """
CREATE FUNCTION test_refuse_success() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
CREATE TRIGGER test_refuse_success BEFORE UPDATE ON profiles_importjob FOR EACH ROW
WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION test_refuse_success()"""


def test_consent_records_roll_back_with_a_failed_import(users, crm):
    """The database refuses the import's last write (the job turning "succeeded"), after the
    consent statements were appended: the ledger is left as before, like everything else."""
    with connection.cursor() as cursor:
        cursor.execute(REFUSE_SUCCESS)
    try:
        job = run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER test_refuse_success ON profiles_importjob; DROP FUNCTION test_refuse_success()")
    assert (job.status, job.consents_recorded) == (ImportJob.Status.FAILED, 0)
    assert "Nothing from this file was loaded" in job.error_message
    assert (ConsentRecord.objects.count(), Profile.objects.count(), ProfileConsent.objects.count()) == (0, 0, 0)


def _erase(email: str, users) -> None:
    request = requests.dsr_create(type="erasure", identifier_kind="email", identifier=email, actor=users["cora"])
    requests.dsr_erase(request=request, actor=users["cora"])


def test_an_erased_person_is_not_recreated_by_a_reimport(users, crm):
    first = run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    assert first.profiles_created == 3
    bob = _profile_of("crm_id", "C2")
    _erase("ann@example.com", users)
    assert _profile_of("email", "ann@example.com") is None
    records = ConsentRecord.objects.count()

    again = run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    assert again.status == ImportJob.Status.SUCCEEDED, again.error_message
    # Her row (granting consent dated before the erasure: not new consent) is reported without
    # its value, under the first of its identifier columns; the others load as before.
    assert error_report(again) == [["2", "Customer ID", "", "identifier belongs to an erased person"]]
    assert (again.rows_loaded, again.rows_rejected, again.profiles_created, again.profiles_matched) == (2, 1, 0, 2)
    assert _profile_of("email", "ann@example.com") is None and _profile_of("crm_id", "C1") is None
    assert _profile_of("crm_id", "C2") == bob
    assert ConsentRecord.objects.count() == records
    assert ImportRowError.objects.filter(job=again).values_list("value", flat=True).get() == ""
    suppressed = {("email", identity_hash("email", "ann@example.com")), ("crm_id", identity_hash("crm_id", "C1"))}
    assert suppressed_identifiers(identifiers=suppressed) == suppressed

    # A transactions file naming her customer id does not bring her back either.
    tx = b"order,customer id,date,amount,currency\nO1,C1,2024-01-05,10.00,EUR\nO2,C2,2024-01-06,5.00,EUR\n"
    orders = run_import(user=users["dan"], source=crm, kind="transactions", content=tx)
    assert error_report(orders) == [["2", "customer id", "", "identifier belongs to an erased person"]]
    assert (orders.rows_loaded, orders.profiles_created, orders.transactions_created) == (1, 0, 1)
    assert _profile_of("crm_id", "C1") is None


def test_new_consent_in_the_same_file_lifts_the_suppression(users, crm):
    run_import(user=users["dan"], source=crm, kind="crm", content=CONSENT_FILE)
    _erase("ann@example.com", users)
    # Consent given after the erasure (and not in the future: the ledger refuses that).
    after = (SuppressionEntry.objects.get(kind="email").created_at + timedelta(microseconds=1)).isoformat()
    content = (b"Customer ID,E-mail,Purpose,Opt in,Consent date\n"
               b"C1,ann@example.com,email_marketing,yes," + after.encode() + b"\n"
               b"C1,ann@example.com,,,\n")
    job = run_import(user=users["dan"], source=crm, kind="crm", content=content)
    assert job.status == ImportJob.Status.SUCCEEDED, job.error_message
    assert error_report(job) == []
    assert (job.rows_loaded, job.profiles_created, job.consents_recorded) == (2, 1, 2)
    ann = _profile_of("email", "ann@example.com")
    assert ann is not None and _profile_of("crm_id", "C1") == ann
    assert profile_purposes(profile_id=ann.id)["email_marketing"] is True
    lifted = {entry.kind: entry for entry in SuppressionEntry.objects.filter(kind__in=["email", "crm_id"])}
    assert all(entry.lifted_at is not None and entry.lifted_by_record_id for entry in lifted.values())
    assert set(lifted) == {"email", "crm_id"}


PENDING_TABLE = """
CREATE TABLE profiles_pendingconsent (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, purpose varchar(60) NOT NULL, granted boolean NOT NULL,
    stated_at timestamptz NOT NULL, created_at timestamptz NOT NULL, handed_over_at timestamptz NULL,
    job_id bigint NULL, profile_id uuid NOT NULL REFERENCES profiles_profile (id), source_id bigint NULL)"""


def test_pending_consents_are_handed_over_before_their_table_is_dropped(users, crm):
    """The table as migration 0005 made it, with statements of an import made before the ledger."""
    from profiles.imports.consents import pending_consents_handover

    migration = importlib.import_module("profiles.migrations.0009_imports_consents_to_ledger")

    kept, merged_away, survivor = Profile.objects.create(), Profile.objects.create(), Profile.objects.create()
    Profile.objects.filter(pk=merged_away.pk).update(merged_into=survivor)
    stated = datetime(2025, 3, 1, 12, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(PENDING_TABLE)
        cursor.execute("INSERT INTO profiles_pendingconsent (purpose, granted, stated_at, created_at, job_id, "
                       "profile_id) VALUES ('email_marketing', true, %s, now(), 7, %s), "
                       "('advertising', false, %s, now(), 7, %s), ('no_such_purpose', true, %s, now(), 7, %s)",
                       [stated, kept.id, stated, merged_away.id, stated, kept.id])
    try:
        with pytest.raises(Exception, match="import_consents_handover"), transaction.atomic(), \
                connection.cursor() as cursor:
            cursor.execute(migration.REFUSE_WHILE_PENDING)
        assert pending_consents_handover() == {"recorded": 2, "unchanged": 0, "refused": 1}
        assert profile_purposes(profile_id=kept.id)["email_marketing"] is True
        assert ProfileConsent.objects.get(profile=survivor).granted is False
        record = ConsentRecord.objects.get(purpose__key="email_marketing")
        assert (record.subject_kind, record.source, record.decided_at, record.details["import"]) == (
            "profile_id", "import", stated, "import 7 (pending)")
        with connection.cursor() as cursor:
            cursor.execute(migration.REFUSE_WHILE_PENDING)  # nothing pending: the guard passes
        assert pending_consents_handover() == {"recorded": 0, "unchanged": 0, "refused": 0}
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE profiles_pendingconsent")
    assert pending_consents_handover() == {"recorded": 0, "unchanged": 0, "refused": 0}
