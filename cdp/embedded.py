"""Embedded PostgreSQL for `make run` and `make test` when no DATABASE_URL is given.

The server is pgserver (PostgreSQL 16 binaries installed from PyPI) with its data under
`<CDP_DATA_DIR>/pg`. It listens on a Unix socket only, never on a TCP port, so two checkouts
on one machine never collide. pgserver counts the processes holding it (a JSON list of pids
in the data folder) and stops the server when the last one exits; we prune dead pids first so
a process killed with SIGKILL cannot keep the server alive forever, and the launcher stops it
explicitly on Ctrl-C.
"""

import json
import logging
import os
import warnings
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

DATABASE_NAME = "cdp"

# Applied once after initdb. Sized for a developer machine, not a production server: enough
# shared buffers and work memory for the demo data set's segment queries and COPY loads.
TUNING = {
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "effective_cache_size": "4GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "random_page_cost": "1.1",
    "jit": "off",
    "max_connections": "200",
}
_TUNED_MARKER = "cdp_tuned"

_started: dict[Path, dict] = {}


def pgdata_path(data_dir: Path) -> Path:
    return Path(data_dir).resolve() / "pg"


def _prune_dead_handles(pgdata: Path) -> None:
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def ensure_running(data_dir: Path, database: str = DATABASE_NAME) -> dict:
    """Start (or attach to) the embedded server and create `database` if missing; return
    connection keywords for psycopg."""
    pgdata = pgdata_path(data_dir)
    if (pgdata, database) in _started:
        return _started[(pgdata, database)]
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (servers, CI); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _prune_dead_handles(pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    _tune_once(server, pgdata)
    info = server.get_postmaster_info()
    params = {"host": str(info.socket_dir), "port": info.port or 5432, "user": "postgres"}
    _ensure_database(params, database)
    _started[(pgdata, database)] = params
    return params


def _tune_once(server, pgdata: Path) -> None:
    marker = pgdata / _TUNED_MARKER
    if marker.exists():
        return
    import psycopg
    from pgserver._commands import pg_ctl

    info = server.get_postmaster_info()
    with psycopg.connect(host=str(info.socket_dir), port=info.port or 5432, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        for name, value in TUNING.items():
            # ALTER SYSTEM takes no bind parameters; names and values are our constants.
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    pg_ctl(["-w", "-m", "fast", "restart", "-o", '-h ""', "-o", f"-k {info.socket_dir}",
            "-l", str(pgdata / "log")], pgdata=pgdata, user=server.system_user, timeout=60)
    # The restart gave the server a new postmaster pid; pgserver must track that one, or its
    # last-handle clean-up finds the old pid gone and leaves the new server running.
    from pgserver.utils import PostmasterInfo

    server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)
    marker.write_text("tuned\n")
    if server.system_user:
        import pwd
        entry = pwd.getpwnam(server.system_user)
        os.chown(marker, entry.pw_uid, entry.pw_gid)


def _ensure_database(params: dict, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _postmaster_info(pgdata: Path, wait_seconds: float = 5.0):
    """postmaster.pid as pgserver reads it, or None. The file is written in steps (and by
    initdb's standalone backends with a negative pid), so an incomplete one is read again."""
    import time

    from pgserver.utils import PostmasterInfo

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            info = PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, IndexError):
            info = None
        else:
            if info is None or info.pid > 0:
                return info
        if time.monotonic() >= deadline:
            logger.warning("embedded PostgreSQL: postmaster.pid stayed incomplete; not stopping it")
            return None
        time.sleep(0.2)


def stop(data_dir: Path) -> bool:
    """Stop the embedded server whatever handles remain (the launcher's last step)."""
    pgdata = pgdata_path(data_dir)
    if not (pgdata / "postmaster.pid").exists():
        return False
    from pgserver._commands import pg_ctl

    info = _postmaster_info(pgdata)
    if info is None or not info.is_running():
        return False
    system_user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=system_user, timeout=60)
    except Exception:  # noqa: BLE001 - fall back to signalling the postmaster directly
        logger.warning("pg_ctl stop failed; terminating the postmaster", exc_info=True)
        info.process.terminate()
        try:
            info.process.wait(10)
        except psutil.TimeoutExpired:
            info.process.kill()
    (pgdata / ".handle_pids.json").write_text("[]")
    for key in [key for key in _started if key[0] == pgdata]:
        del _started[key]
    return True
