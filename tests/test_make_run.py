"""`make run` end to end: a fresh data folder, the real launcher, Ctrl-C, and no orphans."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")),
                                reason="exercises the embedded defaults; DATABASE_URL is set")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pump(process, log: list[str]) -> None:
    for line in process.stdout:
        log.append(line)


def _wait_for(process, pattern: str, timeout: float, log: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, "".join(log))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"launcher did not print {pattern!r} within {timeout} s:\n{''.join(log)}")


def _wait_for_value(probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.5)
    pytest.fail(f"not reached within {timeout} s")


def _postmaster_alive(data_dir: Path) -> bool:
    """The embedded server is up if postmaster.pid names a live process (its command line may
    not mention the folder: pg_ctl restart drops -D, and long paths move the socket)."""
    pid_file = data_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def _manage_shell(env: dict, code: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE_DIR, env=env, text=True,
                          capture_output=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def _events_reach_profiles(base: str, env: dict) -> None:
    """Events posted to the running system are attached to profiles by its worker, burst after
    burst (the embedded broker's "resolution queued" flag is cleared by each run)."""
    key = _manage_shell(env, "from cdp import apikeys; from profiles.models import Source, SourceKey; "
                             "s = Source.objects.create(name='Launch test'); "
                             "print(apikeys.source_key_create(source=s, kind=SourceKey.Kind.WRITE)[1])")
    for burst in range(2):
        ids = [f"launch-visitor-{burst}-{n}" for n in range(3)]
        for anonymous_id in ids:
            answer = requests.post(f"{base}/v1/batch", auth=(key, ""), timeout=10, json={"batch": [{
                "type": "track", "event": "Launch Test", "anonymousId": anonymous_id,
                "context": {"consent": {"categoryPreferences": {"Analytics": True}}}}]})
            assert answer.json() == {"success": True}
        query = (f"from profiles.models import Event; print(Event.objects.filter(anonymous_id__in={ids!r}, "
                 "profile__isnull=False).count())")
        _wait_for_value(lambda query=query: _manage_shell(env, query) == "3", timeout=60)


def test_make_run_serves_the_dashboard_and_ctrl_c_stops_every_process(tmp_path):
    data_dir = tmp_path / "cdp-data"
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CDP_BROKER_DIR"}}
    env.update(CDP_DATA_DIR=str(data_dir), PORT=str(port), CDP_DEMO_PROFILES="200", CDP_DEMO_DAYS="14",
               CDP_ADMIN_PASSWORD="launch-test-password", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "manage.py", "runcdp"], cwd=BASE_DIR, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log: list[str] = []
    threading.Thread(target=_pump, args=(process, log), daemon=True).start()
    try:
        _wait_for(process, r"CDP is running at (http://\S+)", timeout=180, log=log)
        output = "".join(log)
        assert "Demo data loaded" in output and "Log in as: admin" in output
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/healthz", timeout=5).json() == {
            "status": "ok", "database": "ok", "broker": "ok"}

        session = requests.Session()
        login_page = session.get(f"{base}/accounts/login/", timeout=5)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        dashboard = session.post(f"{base}/accounts/login/", timeout=10, headers={"Referer": f"{base}/"},
                                 data={"username": "admin", "password": "launch-test-password",
                                       "csrfmiddlewaretoken": token, "next": "/"})
        assert dashboard.url.rstrip("/") == base
        assert 'data-testid="count-profiles">200<' in dashboard.text
        assert 'data-testid="count-segments">7<' in dashboard.text
        assert "Demo segments: 7 from the templates" in output
        # The worker computes the demo segments' first runs.
        def computed():
            listing = session.get(f"{base}/api/segments/", timeout=5).json()["results"]
            return len(listing) == 7 and all(item["computed_at"] for item in listing) and listing
        listing = _wait_for_value(computed, timeout=120)
        assert {item["status"] for item in listing} == {"ok"}

        _events_reach_profiles(base, env)

        children = psutil.Process(process.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "gunicorn" in names and "worker" in names and "beat" in names
        assert _postmaster_alive(data_dir), "the embedded PostgreSQL should be running"
        # A worker that dies (OOM killer, broker fault) is started again, not the end of the system.
        worker = next(child for child in psutil.Process(process.pid).children()
                      if "worker" in child.cmdline() and "celery" in " ".join(child.cmdline()))
        worker.kill()
        _wait_for(process, r"The worker process exited \(code -9\); started it again", timeout=30, log=log)
        fresh = next(child for child in psutil.Process(process.pid).children() if "worker" in child.cmdline())
        assert fresh.pid != worker.pid
        postmaster = psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0]))
        children = psutil.Process(process.pid).children(recursive=True)
        tracked = children + [postmaster] + postmaster.children(recursive=True)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            raise

    assert process.returncode == 0, "".join(log)
    time.sleep(0.5)
    leftovers = [p for p in tracked if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
    assert not _postmaster_alive(data_dir)
    assert _processes_using(data_dir) == []


def test_a_process_that_starts_the_embedded_database_stops_it_when_it_exits(tmp_path):
    """Even the very first start of a new data folder (initdb + tuning restart) leaves nothing."""
    data_dir = tmp_path / "fresh"
    script = ("from pathlib import Path; from cdp import embedded; "
              f"print(embedded.ensure_running(Path({str(data_dir)!r}))['host'])")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cdp.settings", "CDP_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(data_dir) in result.stdout
    deadline = time.monotonic() + 10
    while _postmaster_alive(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _postmaster_alive(data_dir)
