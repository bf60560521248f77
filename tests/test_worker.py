"""The asynchronous plumbing with a real Celery worker process (not eager mode)."""

from django.db import transaction

from profiles import partitions
from profiles.tasks import event_partitions_ensure_task
from tests.helpers import wait_until


def test_a_real_worker_runs_a_task_published_on_commit(celery_worker_process):
    wanted = {"profiles_event_y2045m01", "profiles_event_y2045m02"}
    assert not wanted & partitions.existing_partitions()
    with transaction.atomic():
        # The house rule: publish only once the transaction has committed.
        transaction.on_commit(lambda: event_partitions_ensure_task.delay(months_ahead=1, today="2045-01-15"))
    wait_until(lambda: wanted <= partitions.existing_partitions(), timeout=30)
    assert "succeeded" in "".join(celery_worker_process.output)
