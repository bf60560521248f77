"""Shared fixtures: the cast of users, a real Celery worker, a real Chromium."""

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from cdp.browser import LAUNCH_ARGS, playwright_chromium, system_chromium
from tests.helpers import PASSWORD

BASE_DIR = Path(__file__).resolve().parent.parent
# Playwright's sync API runs an event loop in the test thread; Django would then refuse ORM
# calls made by the test itself. The live server runs in its own thread and is unaffected.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CAST = {
    "alice": "marketer",
    "dan": "data_team",
    "cora": "compliance_officer",
    "mallory": None,
}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The consent ledger refuses TRUNCATE (a trigger) unless `cdp.allow_ledger_truncate` is on;
    Django flushes tables after tests that commit, so the throw-away test database allows it.
    Set as the database default for new connections and on the current one."""
    from django.db import connection
    from psycopg import sql

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER DATABASE {} SET cdp.allow_ledger_truncate = 'on'").format(
            sql.Identifier(connection.settings_dict["NAME"])).as_string(cursor.connection))
        cursor.execute("SET cdp.allow_ledger_truncate = 'on'")


@pytest.fixture(autouse=True)
def _reference_data(request):
    """Tests that commit (live server, real worker) end by flushing every table, which also
    wipes rows made by data migrations (roles, purposes). Put them back before such a test.

    (Django's serialized rollback would do this, but Playwright's event loop gives the test
    thread a different context, and with it a connection object without the serialized data.)
    """
    names = set(request.fixturenames)
    if names & {"live_server", "transactional_db", "celery_worker_process"}:
        request.getfixturevalue("transactional_db")
        from cdp.reference_data import reference_data_ensure

        reference_data_ensure()


@pytest.fixture(autouse=True)
def _fresh_consent_configuration():
    """Purposes, CMP mappings and minimisation rules are cached in-process for a few seconds;
    each test starts from what its database holds."""
    from consent import reference

    reference.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Tests create many users; the production hasher's cost is not what they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _private_broker(tmp_path_factory):
    """Each test session gets its own filesystem queue, so a running `make run` never steals
    (or feeds) the tests' tasks."""
    from cdp.celery import app

    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        yield None
        return
    folder = tmp_path_factory.mktemp("broker")
    options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
    options.update(data_folder_in=str(folder / "queue"), data_folder_out=str(folder / "queue"),
                   control_folder=str(folder / "control"))
    for key in ("data_folder_in", "control_folder"):
        Path(options[key]).mkdir(parents=True, exist_ok=True)
    # Set before anything publishes: connections and pools are created lazily from it.
    app.conf.broker_transport_options = options
    yield folder


@pytest.fixture
def users(db):
    """alice the marketer, dan the data team, cora the compliance officer, mallory with no role,
    and root the superuser."""
    from django.contrib.auth.models import Group, User

    cast = {}
    for username, role in CAST.items():
        user = User.objects.create_user(username=username, password=PASSWORD)
        if role:
            user.groups.add(Group.objects.get(name=role))
        cast[username] = user
    cast["root"] = User.objects.create_superuser(username="root", password=PASSWORD)
    return cast


def database_url_for_children() -> str:
    """A URL of the test database that other processes (a Celery worker) can use."""
    from django.db import connection

    params = connection.get_connection_params()
    host = params.get("host") or ""
    port = params.get("port") or 5432
    user = params.get("user") or "postgres"
    password = params.get("password") or ""
    auth = f"{user}:{password}@" if password else f"{user}@"
    if host.startswith("/"):
        return f"postgresql://{auth}/{params['dbname']}?host={host}&port={port}"
    return f"postgresql://{auth}{host}:{port}/{params['dbname']}"


class WorkerProcess:
    """A real `celery worker` subprocess on the test database and the session's broker."""

    def __init__(self, broker_folder):
        env = dict(os.environ)
        env["DATABASE_URL"] = database_url_for_children()
        if broker_folder is not None:
            env["CDP_BROKER_DIR"] = str(broker_folder)
        env["CDP_LOG_LEVEL"] = "INFO"
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cdp", "worker", "--pool", "prefork", "--concurrency", "2",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
             "--hostname", f"test-{os.getpid()}@%h"],
            cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self._wait_for("ready.", timeout=60)

    def _pump(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _wait_for(self, marker: str, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("celery worker exited early:\n" + "".join(self.output))
            try:
                if marker in self.lines.get(timeout=0.2):
                    return
            except queue.Empty:
                continue
        raise RuntimeError(f"celery worker not ready after {timeout} s:\n" + "".join(self.output))

    def diagnostics(self, last_lines: int = 40) -> str:
        """What the worker is doing, for a failure message: its processes (state, kernel wait
        channel), the test database's busy sessions and ungranted locks, its last output lines."""
        from django.db import connection

        lines = ["worker processes (pid ppid stat wchan elapsed cpu command):"]
        ps = subprocess.run(["ps", "-eo", "pid,ppid,stat,wchan:24,etime,time,args", "--sort", "pid"],
                            capture_output=True, text=True, check=False).stdout.splitlines()
        lines += [line[:160] for line in ps if "celery" in line and "ps -eo" not in line]
        with connection.cursor() as cursor:
            cursor.execute("""
                SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, '-'),
                       round(extract(epoch FROM now() - xact_start)::numeric, 1),
                       left(regexp_replace(query, '\\s+', ' ', 'g'), 140)
                FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                  AND state <> 'idle' ORDER BY xact_start""")
            lines.append("database sessions not idle (pid state wait xact_seconds query):")
            lines += ["  " + " | ".join(str(value) for value in row) for row in cursor.fetchall()]
            cursor.execute("""SELECT l.pid, l.locktype, l.mode, l.relation::regclass::text, l.objid
                              FROM pg_locks l WHERE NOT l.granted""")
            lines.append("locks waited for (pid type mode relation objid):")
            lines += ["  " + " | ".join(str(value) for value in row) for row in cursor.fetchall()]
        lines.append(f"the worker's last {last_lines} lines of output:")
        return "\n".join(lines) + "\n" + "".join(line[:400] + ("\n" if len(line) > 400 else "")
                                                 for line in self.output[-last_lines:])

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        # A pool process can outlive its main process (still in a task, or stuck); left running it
        # would keep its database session, and its locks, into later tests.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, 9)


def broker_purge() -> int:
    """Empty the session's task queue. Earlier tests' after-commit notifications pile up there;
    their data is gone, so a fresh worker should not have to drain them before this test's work."""
    from cdp import flags, hooks
    from cdp.celery import app
    from segments.services.realtime import DRAIN_REQUESTED

    names = {app.conf.task_default_queue, *(queue.name for queue in app.conf.task_queues or ())}
    with app.connection_for_write() as connection:
        purged = sum(connection.default_channel.queue_purge(name) or 0 for name in sorted(names))
    # The "a message is queued" flags spoke of the messages just purged.
    for flag in (hooks.RESOLVE_QUEUED_FLAG, DRAIN_REQUESTED):
        flags.flag_clear(flag)
    return purged


@pytest.fixture
def celery_worker_process(transactional_db, _private_broker):
    """Start a real Celery worker for one test (needs committed data, hence transactional_db)."""
    broker_purge()
    worker = WorkerProcess(_private_broker)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def chromium_path():
    path = system_chromium() or playwright_chromium()
    if not path:
        pytest.skip("no Chromium available (install Debian's chromium or set CHROMIUM_PATH)")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


@pytest.fixture
def fresh_ingestion_caches():
    """Ingestion and sources tests start with no cached keys, sources or cache entries."""
    from django.core.cache import cache

    from cdp import apikeys
    from profiles.ingestion import services

    cache.clear()
    apikeys._cache.clear()
    services.source_cache_clear()
