""""A task message is already queued" flags, shared by the web and worker processes.

A stage that notifies the next one after every commit (ingestion -> identity resolution,
resolution -> segments' real-time drain) needs one queued message, not one per commit: the task
claims everything committed before it starts. `flag_set_once` sets the flag and says whether the
caller must send the message (it was not set); the task calls `flag_clear` *before* it looks for
work, so a commit that finds the flag set is certain to be seen by the queued task. Flags expire
(`ttl`) in case a message is lost; the beat sweeps are the last safety net.

Where they live: Redis when configured; else, with the embedded filesystem broker (one machine
by construction), a file created with O_EXCL beside the queue; else nowhere, and every commit
sends its message as before.
"""

import contextlib
import os
import time
from pathlib import Path

from django.conf import settings

_redis_clients: dict = {}


def _redis():
    if not settings.REDIS_URL:
        return None
    if settings.REDIS_URL not in _redis_clients:
        import redis

        _redis_clients[settings.REDIS_URL] = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1)
    return _redis_clients[settings.REDIS_URL]


def _folder() -> Path | None:
    """Beside the filesystem broker's queue this process publishes to (as configured on the app)."""
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return None
    from celery import current_app

    queue = current_app.conf.broker_transport_options.get("data_folder_out")
    return Path(queue).parent / "flags" if queue else None


def flag_set_once(name: str, *, ttl: float = 10.0) -> bool:
    """Set the flag; True if it was not set (or had expired): the caller sends the message."""
    from redis.exceptions import RedisError

    client = _redis()
    if client is not None:
        try:
            return bool(client.set(name, b"1", nx=True, ex=max(1, int(ttl))))
        except (RedisError, OSError):  # Redis unreachable: send, as without flags
            return True
    folder = _folder()
    if folder is None:
        return True
    path = folder / name
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        try:
            if time.time() - path.stat().st_mtime < ttl:
                return False
            os.utime(path)  # expired: renew it and send (a racing caller may send too: harmless)
        except FileNotFoundError:  # cleared meanwhile: the task is starting; send for this commit
            pass
        return True
    except FileNotFoundError:  # no folder yet
        folder.mkdir(parents=True, exist_ok=True)
        return flag_set_once(name, ttl=ttl)
    except OSError:
        return True


def flag_clear(name: str) -> None:
    """The task is about to look for work: commits from now on need a message of their own."""
    from redis.exceptions import RedisError

    client = _redis()
    if client is not None:
        with contextlib.suppress(RedisError, OSError):
            client.delete(name)
        return
    folder = _folder()
    if folder is not None:
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
