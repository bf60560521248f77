"""The Celery application. Tasks live in each app's tasks.py and are discovered."""

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _make_broker_folders(sender, **kwargs):
    # The filesystem transport expects its folders to exist before the first publish.
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)


app.conf.beat_schedule = {
    "event-partitions-ahead": {
        "task": "profiles.tasks.event_partitions_ensure_task",
        "schedule": crontab(minute=7, hour="*/6"),
    },
    # Identity resolution: a safety net behind the per-request notification (a lost message or a
    # crashed worker never leaves events unattached for long), and the nightly full rebuild.
    "identity-resolve-sweep": {"task": "profiles.identity_resolve_pending", "schedule": 60.0},
    "identity-graph-rebuild": {"task": "profiles.identity_graph_rebuild", "schedule": crontab(minute=30, hour=3)},
}
