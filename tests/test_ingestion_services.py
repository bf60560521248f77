"""The ingestion quota under production processes: several gunicorn workers sharing Redis.

Run by CI (`make services-test`) against the machine's PostgreSQL and Redis; skipped otherwise.
"""

import base64
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import requests

from cdp import apikeys
from profiles.models import Event, Source, SourceKey
from tests.conftest import database_url_for_children
from tests.ingestion_helpers import CONSENT

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
                       reason="services tests need DATABASE_URL and REDIS_URL (CI sets both)"),
]
BASE_DIR = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db):
    port = _free_port()
    env = dict(os.environ, DATABASE_URL=database_url_for_children(), CDP_LOG_LEVEL="WARNING")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "cdp.wsgi:application", "--bind",
                                f"127.0.0.1:{port}", "--workers", "3", "--log-level", "warning"],
                               cwd=BASE_DIR, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:  # whatever happens, the server and its workers go with the test
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.post(f"{url}/v1/m", data=b"{}", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet, or listening while its workers still boot (slow on a busy machine).
                time.sleep(0.3)
        else:
            pytest.fail("gunicorn did not start")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_quota_holds_across_gunicorn_workers(gunicorn):
    # A random id: the quota's cache keys live in a Redis other test runs may share.
    source = Source.objects.create(id=random.randint(10**9, 2 * 10**9), name="Quota", events_per_minute_limit=2500)
    raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)[1]
    auth = {"Authorization": "Basic " + base64.b64encode(f"{raw}:".encode()).decode(), "Connection": "close"}
    if time.time() % 60 > 40:  # all requests inside one quota minute
        time.sleep(61 - time.time() % 60)
    statuses, retry_after = [], set()
    for request in range(30):
        batch = [{"type": "track", "event": "E", "userId": "u", "messageId": f"q-{request}-{i}", "context": CONSENT}
                 for i in range(100)]
        response = requests.post(f"{gunicorn}/v1/batch", data=orjson.dumps({"batch": batch}), headers=auth, timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            retry_after.add(response.json()["code"])
            assert 1 <= int(response.headers["Retry-After"]) <= 60
    # One shared counter: 25 batches of 100 fill 2,500/minute whichever worker served them.
    assert statuses == [200] * 25 + [429] * 5
    assert retry_after == {"rate_limited"}
    assert Event.objects.filter(source_id=source.id).count() == 2500
