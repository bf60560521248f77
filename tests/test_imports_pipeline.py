"""The import pipeline end to end in-process: reading, mapping, cleaning, validation, loading."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from profiles.identifiers import identity_hash
from profiles.models import Identity, ImportJob, Profile, Source, Transaction
from tests.imports_helpers import _import_dir, error_report, run_import, upload  # noqa: F401 - autouse fixture

# The import runs in its own transaction and reports progress through a second connection, which
# must see the committed job row: these tests commit (transactional_db).


@pytest.fixture
def crm(transactional_db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


@pytest.fixture
def pos(transactional_db):
    return Source.objects.create(name="Stores", kind=Source.Kind.POS)


CRM_FILE = (
    b"Customer ID,E-mail,First name,Gender,City,Age\n"
    b"C1,ann@example.com,Ann,F,Berlin,34\n"
    b"C2,not-an-email,Bob,M,Paris,40\n"
    b"C3,cid@example.com,Cid,male,Rome,130\n"
    b",,Dee,F,Oslo,20\n"
    b"C5,eve@example.com,Eve,female,Lyon,28\n"
)


def test_crm_file_loads_valid_rows_and_reports_bad_ones(users, crm):
    job = run_import(user=users["dan"], source=crm, kind="crm", content=CRM_FILE)
    assert job.status == ImportJob.Status.SUCCEEDED, job.error_message
    assert (job.rows_total, job.rows_loaded, job.rows_rejected, job.profiles_created) == (5, 2, 3, 2)
    assert error_report(job) == [
        ["3", "E-mail", "not-an-email", "malformed email address"],
        ["4", "Age", "130", "impossible age (must be between 0 and 120)"],
        ["5", "", "", "missing identifier: the row names no customer (Customer id (CRM id), Email, Phone, "
                      "User id (website login))"],
    ]
    ann = Profile.objects.get(identities__kind="crm_id", identities__value_hash=identity_hash("crm_id", "C1"))
    assert (ann.first_name, ann.gender, ann.city, ann.age) == ("Ann", "female", "Berlin", 34)
    assert set(ann.identities.values_list("kind", flat=True)) == {"crm_id", "email"}


def _crm_id(profile_crm: str) -> Profile:
    return Profile.objects.get(identities__kind="crm_id", identities__value_hash=identity_hash("crm_id", profile_crm))


def _state() -> dict:
    """Everything an import can touch, to compare before and after."""
    from consent.models import ConsentRecord
    from profiles.models import IdentityLink, PendingMerge, TraitProvenance, TransactionItem

    return {
        "profiles": sorted((str(p.id), p.city, p.gender, p.age, p.first_name, p.updated_at.isoformat(),
                            repr(p.traits)) for p in Profile.objects.all()),
        "identities": sorted(Identity.objects.values_list("id", "profile_id", "kind", "value")),
        "links": sorted(IdentityLink.objects.values_list("identity_a_id", "identity_b_id", "rule")),
        "transactions": sorted(Transaction.objects.values_list("id", "order_id", "amount", "profile_id")),
        "items": TransactionItem.objects.count(),
        "merges": PendingMerge.objects.count(),
        "consents": ConsentRecord.objects.count(),
        "provenance": sorted((str(p.profile_id), repr(p.fields)) for p in TraitProvenance.objects.all()),
    }


def test_reimporting_the_same_file_changes_nothing(users, crm, pos):
    first = run_import(user=users["dan"], source=crm, kind="crm", content=CRM_FILE)
    tx = (b"order,customer id,date,amount,currency,product,category,qty\n"
          b"O1,C1,2024-01-05,10.00,EUR,Tea,Food,2\nO2,C1,2024-02-01,5.50,EUR,Cup,Home,1\n"
          b"O3,C9,2024-02-03,7.00,EUR,Pen,Office,1\n")
    run_import(user=users["dan"], source=pos, kind="transactions", content=tx)
    before = _state()
    again = run_import(user=users["dan"], source=crm, kind="crm", content=CRM_FILE)
    again_tx = run_import(user=users["dan"], source=pos, kind="transactions", content=tx)
    assert _state() == before
    assert (again.rows_loaded, again.profiles_created, again.profiles_matched) == (2, 0, 2)
    assert (again_tx.transactions_created, again_tx.profiles_created, again_tx.profiles_matched) == (0, 0, 2)
    assert first.profiles_created == 2


def test_latin1_semicolons_and_eu_dates_import_correctly(users, pos):
    content = ("Kunde;Bon;Datum;Betrag;Währung;Artikel;Kategorie\n"
               "K-1;B1;31.12.2023;1.234,50;EUR;Käse;Lebensmittel\n"
               "K-2;B2;05.01.2024 14:30;12,00 EUR;;Brötchen;Bäckerei\n").encode("latin-1")
    job = run_import(user=users["dan"], source=pos, kind="transactions", content=content,
                     columns={"Bon": "order_id", "Artikel": "product", "Kategorie": "category"},
                     options={"date_format": "eu", "decimal_comma": True})
    assert job.status == "succeeded", job.error_message
    assert (job.encoding, job.delimiter) == ("cp1252", ";")
    assert (job.rows_loaded, job.rows_rejected) == (2, 0)
    orders = {t.order_id: t for t in Transaction.objects.prefetch_related("items")}
    assert orders["B1"].amount == Decimal("1234.50") and orders["B1"].currency == "EUR"
    assert orders["B1"].timestamp == datetime(2023, 12, 31, tzinfo=UTC)
    assert orders["B2"].amount == Decimal("12.00") and orders["B2"].currency == "EUR"
    assert orders["B2"].timestamp == datetime(2024, 1, 5, 14, 30, tzinfo=UTC)
    assert [(i.product_name, i.category) for i in orders["B1"].items.all()] == [("Käse", "Lebensmittel")]
    assert [(i.product_name, i.category) for i in orders["B2"].items.all()] == [("Brötchen", "Bäckerei")]


def test_transactions_file_validation_reports_every_bad_row(users, pos):
    content = (b"order_id,customer_id,date,amount,currency,quantity\n"
               b"A1,C1,2024-03-01,10.00,EUR,1\n"
               b"A2,C1,2099-01-01,10.00,EUR,1\n"
               b"A3,C2,2024-03-01,10.00,ABC,1\n"
               b"A4,C2,2024-03-01,10.00,EUR,-2\n"
               b"A5,,2024-03-01,10.00,EUR,1\n"
               b"A6,C3,2024-03-01,ten,EUR,1\n"
               b"A1,C1,2024-03-01,10.00,EUR,1\n"
               b"A1,C7,2024-03-01,3.00,EUR,1\n")
    job = run_import(user=users["dan"], source=pos, kind="transactions", content=content)
    assert job.status == "succeeded", job.error_message
    assert error_report(job) == [
        ["3", "date", "2099-01-01", "date in the future"],
        ["4", "currency", "ABC", "unknown currency (not an ISO 4217 code such as EUR, USD, GBP)"],
        ["5", "quantity", "'-2", "negative quantity"],
        ["6", "", "", "missing identifier: the row names no customer (Customer id (CRM id), Email, Phone, "
                      "User id (website login))"],
        ["7", "amount", "ten", "not an amount"],
        ["8", "order_id", "A1", "duplicate of row 2 (skipped)"],
        ["9", "order_id", "A1", "order id already used for another customer at row 2"],
    ]
    assert (job.rows_loaded, job.rows_rejected, job.rows_duplicate) == (1, 6, 1)
    assert list(Transaction.objects.values_list("order_id", "amount")) == [("A1", Decimal("10.00"))]


def test_lines_sharing_an_order_id_make_one_order_with_an_item_each(users, pos):
    content = (b"order_id,customer_id,date,amount,currency,product\n"
               b"M1,C1,2024-03-01,10.00,EUR,Tea\n"
               b"M2,C2,2024-03-02,7.00,EUR,Jam\n"
               b"M1,C1,2024-03-01,5.50,EUR,Cake\n"
               b"M2,C2,2024-03-02,1.00,USD,Bread\n"
               b"M3,C2,2024-03-03,2.00,EUR,Milk\n")
    job = run_import(user=users["dan"], source=pos, kind="transactions", content=content)
    assert job.status == "succeeded", job.error_message
    assert error_report(job) == [["5", "order_id", "M2", "order id already used with another currency at row 3"]]
    orders = {t.order_id: t for t in Transaction.objects.prefetch_related("items")}
    assert {o: t.amount for o, t in orders.items()} == {"M1": Decimal("15.50"), "M2": Decimal("7.00"),
                                                         "M3": Decimal("2.00")}
    assert sorted(i.product_name for i in orders["M1"].items.all()) == ["Cake", "Tea"]
    assert [i.product_name for i in orders["M2"].items.all()] == ["Jam"]


def test_a_row_naming_two_existing_profiles_links_them_and_requests_a_merge(users, crm):
    from profiles.models import IdentityLink, PendingMerge

    run_import(user=users["dan"], source=crm, kind="crm",
               content=b"customer_id,email\nC1,\nC2,two@example.com\n")
    first, second = _crm_id("C1"), _crm_id("C2")
    job = run_import(user=users["dan"], source=crm, kind="crm", content=b"customer_id,email\nC1,two@example.com\n")
    assert job.status == "succeeded"
    merge = PendingMerge.objects.get()
    assert {merge.profile_a_id, merge.profile_b_id} == {first.id, second.id} and merge.job_id == job.id
    crm_identity = Identity.objects.get(kind="crm_id", value_hash=identity_hash("crm_id", "C1"))
    email_identity = Identity.objects.get(kind="email")
    assert IdentityLink.objects.filter(identity_a=min(crm_identity.id, email_identity.id),
                                       identity_b=max(crm_identity.id, email_identity.id), rule="crm_row").exists()


def test_an_authoritative_source_wins_over_a_later_non_authoritative_import(users, crm):
    other = Source.objects.create(name="Survey vendor", kind=Source.Kind.OTHER)
    run_import(user=users["dan"], source=crm, kind="crm", content=b"customer_id,city,occupation\nC1,Berlin,\n")
    run_import(user=users["dan"], source=other, kind="crm",
               content=b"customer_id,city,occupation\nC1,Hamburg,teacher\n")
    profile = _crm_id("C1")
    assert (profile.city, profile.occupation) == ("Berlin", "teacher")
    run_import(user=users["dan"], source=crm, kind="crm", content=b"customer_id,city\nC1,Munich\n")
    assert _crm_id("C1").city == "Munich"


def test_enrichment_by_email_sha256_and_consent_columns(users, crm):
    import hashlib

    from consent.enforcement import profile_purposes

    run_import(user=users["dan"], source=crm, kind="crm",
               content=(b"customer_id,email,consent purpose,consent granted,consent date\n"
                        b"C1,Ann@Example.com,email_marketing,yes,2024-05-01\n"
                        b"C2,bo@example.com,newsletterz,yes,2024-05-01\n"))
    assert profile_purposes(profile_id=_crm_id("C1").id)["email_marketing"] is True
    digest = hashlib.sha256(b"ann@example.com").hexdigest()
    content = f"email_sha256,income band,loyalty tier\n{digest.upper()},high,gold\n{'0' * 64},low,none\n".encode()
    job = run_import(user=users["dan"], source=crm, kind="enrichment", content=content,
                     columns={"loyalty tier": "trait:loyalty_tier"})
    assert job.status == "succeeded", job.error_message
    assert (job.rows_loaded, job.rows_rejected, job.profiles_matched) == (1, 1, 1)
    assert error_report(job) == [["3", "", "", "no existing profile has this email, email hash or customer id"]]
    profile = _crm_id("C1")
    assert (profile.income_band, profile.traits["loyalty_tier"]) == ("high", "gold")


def test_xlsx_and_gzip_files_import_like_csv(users, crm, tmp_path):
    import gzip

    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Customer ID", "Birth date", "Country"])
    sheet.append(["X1", datetime(1990, 4, 2), "de"])
    sheet.append(["X2", datetime(1985, 12, 24), "fr"])
    path = tmp_path / "crm.xlsx"
    workbook.save(path)
    job = run_import(user=users["dan"], source=crm, kind="crm", content=path.read_bytes(), name="crm.xlsx")
    assert (job.file_format, job.status, job.rows_loaded) == ("xlsx", "succeeded", 2)
    x1 = _crm_id("X1")
    assert (x1.birth_year, x1.country, x1.traits["birth_date"]) == (1990, "DE", "1990-04-02")
    zipped = gzip.compress(b"customer_id;city\nZ1;Porto\n")
    job = run_import(user=users["dan"], source=crm, kind="crm", content=zipped, name="crm.csv.gz")
    assert (job.file_format, job.status, job.rows_loaded) == ("csv.gz", "succeeded", 1)
    assert _crm_id("Z1").city == "Porto"


def test_hashed_email_enrichment_matches_identities_created_outside_imports(users, crm):
    import hashlib

    from django.utils import timezone

    from profiles.identifiers import stored_value

    visitor = Profile.objects.create()
    now = timezone.now()
    Identity.objects.create(profile=visitor, kind="email", value_hash=identity_hash("email", "web@example.com"),
                            value=stored_value("email", "web@example.com"), first_seen_at=now, last_seen_at=now)
    digest = hashlib.sha256(b"web@example.com").hexdigest()
    job = run_import(user=users["dan"], source=crm, kind="enrichment",
                     content=f"email_sha256,occupation\n{digest},pilot\n".encode())
    assert (job.status, job.rows_loaded, job.profiles_matched) == ("succeeded", 1, 1), job.error_message
    visitor.refresh_from_db()
    assert visitor.occupation == "pilot"


def test_utf8_bom_and_tab_delimited_files_are_detected(users, crm):
    content = "\ufeffcustomer_id\tcity\tlast name\nT1\tZürich\tMüller\n".encode()
    job = run_import(user=users["dan"], source=crm, kind="crm", content=content)
    assert (job.encoding, job.delimiter, job.headers) == ("utf-8-sig", "\t", ["customer_id", "city", "last name"])
    profile = _crm_id("T1")
    assert (profile.city, profile.last_name) == ("Zürich", "Müller")


def test_uploads_are_deleted_after_the_retention_and_a_retry_then_explains(users, crm, settings):
    from datetime import timedelta
    from pathlib import Path

    from django.utils import timezone

    from profiles.imports.mapping import MappingError
    from profiles.imports.services import import_files_expire, import_retry

    done = run_import(user=users["dan"], source=crm, kind="crm", content=CRM_FILE)
    failed = upload(user=users["dan"], source=crm, kind="crm", content=CRM_FILE, name="again.csv")
    ImportJob.objects.filter(pk=failed.pk).update(status=ImportJob.Status.FAILED, finished_at=timezone.now())
    ImportJob.objects.filter(pk=done.pk).update(finished_at=timezone.now() - timedelta(days=8))
    done_path, failed_path = Path(done.file_path), Path(failed.file_path)

    assert import_files_expire(older_than_days=7) == 1
    done.refresh_from_db()
    assert (done.file_path, done.file_removed_reason) == ("", "expired")
    assert not done_path.exists() and failed_path.exists()
    assert done.rows_loaded == 2  # the history keeps its counts

    import_files_expire(older_than_days=0)
    failed.refresh_from_db()
    with pytest.raises(MappingError, match="no longer kept"):
        import_retry(job=failed, user=users["dan"])
    failed.refresh_from_db()
    assert failed.status == ImportJob.Status.FAILED


@pytest.mark.parametrize("values", [["a", "b"], [" a", "b"], ["a ", "b"], ["a", "b\t"], ["a", "\xa0b"], ["a\n", ""],
                                    ["", ""], ["x\x00 y"], ["\u3000z"], [" "], []])
def test_trimming_skips_clean_columns_and_strips_like_str_strip(values):
    import pandas as pd

    from profiles.imports.cleaning import trim

    assert trim(pd.Series(values, dtype=object)).tolist() == [v.strip() for v in values]


@pytest.mark.parametrize("values", [["a", "b"], [" a", "b"], ["a ", "b"], ["a", "b\t"], ["a", "\xa0b"], ["a\n", ""],
                                    ["", ""], ["x\x00 y"], ["\u3000z"], ["q\x1f"], [" "], []])
def test_trimming_arrow_strings_strips_like_str_strip(values):
    """pandas' Arrow-backed strings (what the CSV reader gives) take the Arrow path."""
    import pandas as pd

    from profiles.imports.cleaning import trim

    assert trim(pd.Series(values, dtype="str")).tolist() == [v.strip() for v in values]


@pytest.mark.parametrize("values", [["12.50", "", "3"], ["1e3", "-4.25", "+7"], ["nan", "1"], ["1", "inf"],
                                    ["-inf", ""], ["€12", "3"], ["1,234.50", "2"], ["12.", ".5"], ["", ""],
                                    ["3.0", "4"], ["9999999999999", "1"]])
def test_numbers_read_by_arrow_clean_like_the_pandas_path(values):
    """Arrow parses plain numbers; whatever it reads must clean exactly as pandas' path does
    (object dtype takes that path), including what is rejected and why."""
    import numpy as np
    import pandas as pd

    from profiles.imports.cleaning import clean_amounts, clean_integers

    arrow, plain = pd.Series(values, dtype="str"), pd.Series(values, dtype=object)
    (fast, fast_currency), (slow, slow_currency) = clean_amounts(arrow, False), clean_amounts(plain, False)
    np.testing.assert_array_equal(fast.bad, slow.bad)
    assert fast.values.astype(float).tolist() == pytest.approx(slow.values.astype(float).tolist(), nan_ok=True)
    assert pd.Series(fast.reason, index=arrow.index)[fast.bad].tolist() == \
        pd.Series(slow.reason, index=plain.index)[slow.bad].tolist()
    assert fast_currency.tolist() == slow_currency.tolist()
    fast, slow = clean_integers(arrow), clean_integers(plain)
    np.testing.assert_array_equal(fast.bad, slow.bad)
    assert fast.values.tolist() == slow.values.tolist()


def test_duplicate_and_repeated_order_lines_are_found_across_chunks(users, pos, settings):
    """Lines are compared in SQL on their staged values, whichever chunk staged them."""
    settings.CDP_IMPORT_CHUNK_ROWS = 2
    content = (b"order_id,customer_id,date,amount,currency,product\n"
               b"A1,C1,2024-03-01,10.00,EUR,Tea\n"
               b"A2,C2,2024-03-01,4.00,EUR,Jam\n"
               b"A1,C1,2024-03-01,10.00,EUR,Tea\n"
               b"A1,C1,2024-03-01,5.00,EUR,Tea\n"
               b"A2,C3,2024-03-01,4.00,EUR,Jam\n"
               b"A3,C2,2024-03-01,1.00,EUR,Jam\n"
               b"A3,C2,2024-03-01,1.00,USD,Jam\n")
    job = run_import(user=users["dan"], source=pos, kind="transactions", content=content)
    assert job.status == "succeeded", job.error_message
    assert error_report(job) == [
        ["4", "order_id", "A1", "duplicate of row 2 (skipped)"],
        ["6", "order_id", "A2", "order id already used for another customer at row 3"],
        ["8", "order_id", "A3", "order id already used with another currency at row 7"],
    ]
    assert job.rows_duplicate == 1
    orders = {t.order_id: t for t in Transaction.objects.all()}
    assert orders["A1"].amount == Decimal("15.00") and orders["A1"].items.count() == 2
    assert orders["A2"].amount == Decimal("4.00") and orders["A3"].amount == Decimal("1.00")


def test_a_file_with_every_identifier_kind_links_and_stages_only_mapped_columns(users, crm):
    """One row naming customer id, email, phone and user id: every identity is created and linked
    (the single-identifier shortcuts must not apply), and re-importing changes nothing."""
    from profiles.models import IdentityLink

    content = b"customer_id,email,phone,user_id,city\nK1,kay@example.com,+49 151 1111 2222,u-k1,Kiel\n"
    job = run_import(user=users["dan"], source=crm, kind="crm", content=content)
    assert (job.status, job.rows_loaded, job.profiles_created) == ("succeeded", 1, 1)
    profile = _crm_id("K1")
    assert sorted(profile.identities.values_list("kind", flat=True)) == ["crm_id", "email", "phone", "user_id"]
    assert IdentityLink.objects.filter(rule="crm_row").count() == 3
    again = run_import(user=users["dan"], source=crm, kind="crm", content=content)
    assert (again.profiles_created, again.profiles_matched, IdentityLink.objects.count()) == (0, 1, 3)
