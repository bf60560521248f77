"""`make run`: bootstrap the system and supervise web, worker and beat until Ctrl-C.

Children run in their own sessions, so a terminal's Ctrl-C reaches only this supervisor, which
then stops them in order (web first, so no new work arrives; then beat; then the worker, which
finishes its current task) and finally the embedded PostgreSQL. Each child also gets
PR_SET_PDEATHSIG, so even a `kill -9` of the supervisor does not leave them running.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connections

from cdp import embedded
from cdp.env import env_int, env_str

STOP_TIMEOUT_SECONDS = 20
# A child that dies is restarted (a worker killed by the OOM killer, a broker hiccup), unless it
# keeps dying: more than RESTART_LIMIT restarts within RESTART_WINDOW_SECONDS stops everything.
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 600
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: ask the kernel to SIGTERM the child when the supervisor dies."""
    with contextlib.suppress(OSError):  # not Linux: the orderly shutdown still applies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, out=sys.stdout):
        self.out = out
        self.children: list[Child] = []
        self.stopping = False
        self.embedded = not settings.DATABASE_URL
        self.port = env_int("PORT", 8000, minimum=1, maximum=65535)
        self.host = env_str("CDP_BIND_HOST", "127.0.0.1")

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- bootstrap ------------------------------------------------------------------------
    def child_environment(self) -> dict:
        env = dict(os.environ)
        if self.embedded:
            name = settings.DATABASES["default"]["NAME"]
            server = embedded.ensure_running(settings.CDP_DATA_DIR, name)
            # Children connect to the running server directly and never manage its life.
            env["DATABASE_URL"] = (f"postgresql://{server['user']}@/{name}"
                                   f"?host={server['host']}&port={server['port']}")
            env["CDP_EMBEDDED_DATABASE"] = "1"
        return env

    def bootstrap(self) -> str | None:
        """Migrate, create roles/admin, load demo data if empty; return a new admin password."""
        from cdp.bootstrap import admin_ensure, demo_data_load_if_empty

        if self.embedded:
            self.say(f"• Embedded PostgreSQL in {embedded.pgdata_path(settings.CDP_DATA_DIR)}")
        else:
            self.say("• PostgreSQL from DATABASE_URL")
        self.say(f"• Celery broker: {_broker_label(settings.CELERY_BROKER_URL)}")
        call_command("migrate", interactive=False, verbosity=0)
        self.say("• Database migrated")
        password = admin_ensure()
        loaded = demo_data_load_if_empty(out=self.out)
        if not loaded:
            self.say("• Existing data kept (demo data loads only into an empty database)")
        connections.close_all()
        return password

    # -- processes ------------------------------------------------------------------------
    def start_children(self, env: dict) -> None:
        python = sys.executable
        workers = env_int("CDP_WEB_WORKERS", min(4, 2 * (os.cpu_count() or 1) + 1), minimum=1)
        concurrency = env_int("CDP_WORKER_CONCURRENCY", max(2, os.cpu_count() or 1), minimum=1)
        Path(settings.CELERY_BEAT_SCHEDULE_FILENAME).parent.mkdir(parents=True, exist_ok=True)
        self.children = [
            Child("web", [python, "-m", "gunicorn", "cdp.wsgi:application", "--bind", f"{self.host}:{self.port}",
                          "--workers", str(workers), "--graceful-timeout", "10", "--access-logfile", "-",
                          # No client address and no query string: both can be personal data.
                          "--access-logformat", '{"access": "%(m)s %(U)s", "status": %(s)s, "ms": %(M)s}']),
            Child("worker", [python, "-m", "celery", "-A", "cdp", "worker", "--loglevel", "INFO",
                             "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
                             "--hostname", "worker@%h"]),
            Child("beat", [python, "-m", "celery", "-A", "cdp", "beat", "--loglevel", "INFO",
                           "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME, "--pidfile="]),
        ]
        self.env = env
        for child in self.children:
            self.start(child)

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.command, env=self.env, start_new_session=True,
                                         preexec_fn=_die_with_parent)

    def restart(self, child: Child) -> bool:
        """Start a dead child again; False once it has died too often lately."""
        now = time.monotonic()
        child.restarts = [at for at in child.restarts if now - at < RESTART_WINDOW_SECONDS]
        if len(child.restarts) >= RESTART_LIMIT:
            return False
        child.restarts.append(now)
        _signal_group(child.process, signal.SIGKILL)  # what is left of its session (pool processes)
        self.start(child)
        return True

    def wait_until_healthy(self, timeout: float = 60) -> bool:
        url = f"http://{self.host}:{self.port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dead_child():
                return False
            try:
                with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
                    if response.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.3)
        return False

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.process and c.process.poll() is not None), None)

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.say("\nStopping: web, beat, worker" + (", database" if self.embedded else "") + " …")
        for name in ("web", "beat", "worker"):
            for child in self.children:
                if child.name == name and child.process and child.process.poll() is None:
                    # Only the main process: gunicorn and celery stop their own workers cleanly.
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"  {child.name} did not stop in {STOP_TIMEOUT_SECONDS} s; killing it")
            # Whatever is left in the child's session (pool processes, gunicorn workers) goes too.
            _signal_group(child.process, signal.SIGKILL)
        connections.close_all()
        if self.embedded:
            embedded.stop(settings.CDP_DATA_DIR)
        self.say("Stopped.")


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _broker_label(url: str) -> str:
    if url.startswith("filesystem://"):
        return f"filesystem queue in {settings.CDP_BROKER_DIR} (no server process)"
    return url.split("@")[-1] if "@" in url else url.split("://")[0]


def run(out=sys.stdout) -> int:
    supervisor = Supervisor(out)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # Both explicitly: a shell that starts us in the background sets SIGINT to "ignore".
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    try:
        supervisor.say("Starting the CDP …")
        env = supervisor.child_environment()
        password = supervisor.bootstrap()
        supervisor.start_children(env)
        if not supervisor.wait_until_healthy():
            dead = supervisor.dead_child()
            supervisor.say(f"The {dead.name if dead else 'web'} process failed to start; see its output above.")
            return 1
        _banner(supervisor, password)
        while True:
            time.sleep(0.5)
            if not (dead := supervisor.dead_child()):
                continue
            code = dead.process.returncode
            if not supervisor.restart(dead):
                supervisor.say(f"The {dead.name} process exited (code {code}) {RESTART_LIMIT} times in "
                               f"{RESTART_WINDOW_SECONDS // 60} minutes; stopping.")
                exit_code = 1
                break
            supervisor.say(f"The {dead.name} process exited (code {code}); started it again.")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the clean-up
        supervisor.stop()
    return exit_code


def _banner(supervisor: Supervisor, password: str | None) -> None:
    from cdp.bootstrap import admin_username

    url = f"http://{supervisor.host}:{supervisor.port}"
    lines = ["", "=" * 64, f"  CDP is running at {url}", f"  Log in as: {admin_username()}"]
    if password:
        lines.append(f"  Password:  {password}   (shown once; keep it)")
    elif os.environ.get("CDP_ADMIN_PASSWORD"):
        lines.append("  Password:  the value of CDP_ADMIN_PASSWORD")
    else:
        lines.append("  Password:  printed when the admin was created "
                     "(reset: .venv/bin/python manage.py changepassword admin)")
    lines += [f"  API docs:  {url}/api/docs/", f"  Health:    {url}/healthz",
              "  Web, worker and beat are running. Press Ctrl-C to stop everything.", "=" * 64, ""]
    supervisor.say("\n".join(lines))
