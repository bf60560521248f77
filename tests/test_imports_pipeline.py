"""The import pipeline end to end in-process: reading, mapping, cleaning, validation, loading."""

import pytest

from profiles.identifiers import identity_hash
from profiles.models import ImportJob, Profile, Source
from tests.imports_helpers import error_report, run_import

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def crm(db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


@pytest.fixture
def pos(db):
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
