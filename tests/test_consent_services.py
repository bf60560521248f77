"""Consent on the production services (PostgreSQL from DATABASE_URL, Redis as broker): the
append-only trigger and an access export through a Redis-fed worker. Run by `make services-test`."""

import os

import pytest
from django.db import IntegrityError, connection, transaction

from consent.models import ConsentRecord, DataSubjectRequest
from consent.services import ledger, requests
from tests.consent_helpers import decide, make_person
from tests.helpers import wait_until

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
                       reason="services tests need DATABASE_URL and REDIS_URL (CI sets both)"),
]


def test_the_production_database_refuses_ledger_changes(db, tmp_path):
    decide("email", "ada@example.com", {"analytics": True})
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE consent_consentrecord SET granted = false")
    assert ConsentRecord.objects.get().granted is True
    assert ledger.ledger_verify(head_dir=tmp_path).is_intact


def test_an_access_export_through_the_redis_broker(celery_worker_process, users):
    # The worker was started before MEDIA could be pointed elsewhere: both use CDP_DATA_DIR/media.
    make_person(email="ada@example.com")
    request = requests.dsr_create(type="access", identifier_kind="email", identifier="ada@example.com",
                                  actor=users["cora"])
    with transaction.atomic():
        requests.dsr_access_start(request=request, actor=users["cora"])
    done = wait_until(lambda: DataSubjectRequest.objects.filter(pk=request.pk, status="completed").first(),
                      timeout=60)
    assert requests.dsr_result_read(request=done, actor=users["cora"]).startswith(b"PK")
    requests.request_file_delete(done)
