"""Imports on the production configuration (PostgreSQL from DATABASE_URL, Redis broker): a file
imported by a real worker through Redis, and the computed-traits task it triggers."""

import os

import pytest

from profiles.imports import services
from profiles.models import ComputedTraits, ImportJob, Source, Transaction
from tests.helpers import wait_until
from tests.imports_helpers import _import_dir, upload  # noqa: F401 - autouse fixture

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
                       reason="services tests need DATABASE_URL and REDIS_URL (CI sets both)"),
]


def test_a_worker_on_redis_imports_a_file_and_refreshes_computed_traits(users, celery_worker_process):
    source = Source.objects.create(name="Stores", kind=Source.Kind.POS)
    job = upload(user=users["dan"], source=source, kind="transactions",
                 content=b"order,customer id,date,amount,currency\nS1,C1,2024-05-01,10.00,EUR\n"
                         b"S2,C1,2024-05-09,30.00,EUR\nS3,C2,2024-05-02,5.00,EUR\nS4,,2024-05-02,5.00,EUR\n")
    services.import_start(job=job, user=users["dan"])
    done = wait_until(lambda: (j := ImportJob.objects.get(pk=job.pk)).status in ImportJob.FINAL_STATUSES and j,
                      timeout=60)
    assert (done.status, done.rows_loaded, done.rows_rejected, done.profiles_created) == ("succeeded", 3, 1, 2)
    assert Transaction.objects.count() == 3
    wait_until(lambda: ComputedTraits.objects.count() == 2, timeout=60)
    assert sorted(ComputedTraits.objects.values_list("order_count", "rfm_frequency")) == [(1, 0), (2, 1)]
