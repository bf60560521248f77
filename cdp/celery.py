"""The Celery application. Tasks live in each app's tasks.py and are discovered."""

import os

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES

# "filesystem://" means kombu's filesystem transport with atomic publishing (cdp/broker.py says
# why). An alias, not a broker_transport setting: that one would also override a redis:// URL.
TRANSPORT_ALIASES["filesystem"] = "cdp.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Segments' real-time tasks have their own queue, so a worker started with `-Q realtime` can
# serve them alone and they never wait behind identity resolution or recomputes (the real-time
# target is end to end under a second). A worker started without -Q consumes both queues.
app.conf.task_queues = (Queue("celery", Exchange("celery"), routing_key="celery"),
                        Queue("realtime", Exchange("realtime"), routing_key="realtime"))
app.conf.task_routes = {"segments.realtime_evaluate": {"queue": "realtime"},
                        "segments.realtime_drain": {"queue": "realtime"}}


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
    # Consent: the daily signed head hash of the ledger (detects a truncated tail), retention
    # rules, and expiry of access-request files.
    "consent-ledger-head-export": {
        "task": "consent.tasks.ledger_head_export_task",
        "schedule": crontab(minute=5, hour=0),
    },
    "consent-retention": {
        "task": "consent.tasks.retention_enforce_task",
        "schedule": crontab(minute=30, hour=2),
    },
    # Ingestion: forget message ids older than CDP_INGEST_DEDUPE_DAYS, hourly so each run is small.
    "event-dedupe-purge": {
        "task": "profiles.tasks.event_dedupe_purge_task",
        "schedule": crontab(minute=17),
    },
    # Segments (issue 5): one dispatcher for every segment's schedule, the sweep that flips
    # memberships when windows lapse, and webhook retries.
    "segments-dispatch-due": {"task": "segments.tasks.recompute_dispatch_task", "schedule": 30.0},
    "segments-timers-sweep": {"task": "segments.tasks.timers_sweep_task", "schedule": 15.0},
    "segments-webhooks-due": {"task": "segments.tasks.webhooks_deliver_due_task", "schedule": 30.0},
    # Imports (issue 4): RFM's T grows every day, so rebuild everyone's computed traits nightly;
    # and fail imports whose worker died (their transaction rolled back).
    "computed-traits-rebuild": {
        "task": "profiles.computed_traits_rebuild",
        "schedule": crontab(minute=30, hour=2),
    },
    "imports-stale-fail": {
        "task": "profiles.imports_stale_fail",
        "schedule": crontab(minute="*/5"),
    },
    # Uploaded files are personal data; keep them only as long as a retry might need them.
    "import-files-expire": {"task": "profiles.import_files_expire", "schedule": crontab(minute=45, hour=2)},
    # Identity resolution: a safety net behind the per-request notification (a lost message or a
    # crashed worker never leaves events unattached for long), and the nightly full rebuild.
    "identity-resolve-sweep": {"task": "profiles.identity_resolve_pending", "schedule": 60.0},
    "identity-graph-rebuild": {"task": "profiles.identity_graph_rebuild", "schedule": crontab(minute=30, hour=3)},
}
