"""Progress of a running import, written through a second database connection.

The import itself runs in ONE transaction (all or nothing), so nothing it writes is visible
until it commits. Progress (rows done, phase, heartbeat) therefore goes through a separate
autocommit connection, which also reads the cancel flag: a cancel request stops the import at
the next chunk (or at once: the cancel service interrupts the working session's query).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections

# Phases after the file has been read, in order; the progress bar spends its last 20 % on them.
READING = "reading"
LOAD_PHASES = ["checking duplicates", "matching identities", "creating profiles", "updating traits",
               "loading transactions", "recording consent", "finishing"]
PHASE_LABELS = {READING: "Reading, cleaning and validating rows", **{p: p.capitalize() for p in LOAD_PHASES}}


class ImportCancelled(Exception):
    pass


@dataclass
class Snapshot:
    rows_done: int
    rows_total: int | None
    phase: str
    elapsed: float


def percent(*, status: str, phase: str, rows_done: int, rows_total: int | None) -> int:
    if status == "succeeded":
        return 100
    if phase in LOAD_PHASES:
        return 80 + int(20 * LOAD_PHASES.index(phase) / len(LOAD_PHASES))
    if not rows_total:
        return 0
    return min(80, int(80 * rows_done / rows_total))


class ProgressReporter:
    """Reports at most every `interval` seconds (always on a phase change) and checks for cancel."""

    def __init__(self, job_id: int, *, interval: float = 0.5, callback: Callable[[Snapshot], None] | None = None):
        self.job_id = job_id
        self.interval = interval
        self.callback = callback
        self.started = time.monotonic()
        self.last = 0.0
        self.phase = READING
        self.rows_done = 0
        self.rows_total: int | None = None
        self._connection = connections.create_connection("default")
        self._connection.set_autocommit(True)

    def close(self) -> None:
        self._connection.close()

    def update(self, *, rows_done: int | None = None, rows_total: int | None = None, phase: str | None = None,
               force: bool = False) -> None:
        changed_phase = phase is not None and phase != self.phase
        if rows_done is not None:
            self.rows_done = rows_done
        if rows_total is not None:
            self.rows_total = rows_total
        if phase is not None:
            self.phase = phase
        now = time.monotonic()
        if not (force or changed_phase or now - self.last >= self.interval):
            return
        self.last = now
        with self._connection.cursor() as cursor:
            cursor.execute(
                "UPDATE profiles_importjob SET rows_done = %s, rows_total = %s, phase = %s, heartbeat_at = now() "
                "WHERE id = %s RETURNING cancel_requested",
                [self.rows_done, self.rows_total, self.phase, self.job_id],
            )
            row = cursor.fetchone()
        if self.callback:
            self.callback(Snapshot(self.rows_done, self.rows_total, self.phase, now - self.started))
        if row is None or row[0]:
            raise ImportCancelled()

    def cancel_requested(self) -> bool:
        with self._connection.cursor() as cursor:
            cursor.execute("SELECT cancel_requested FROM profiles_importjob WHERE id = %s", [self.job_id])
            row = cursor.fetchone()
        return row is None or bool(row[0])


def rate_and_eta(*, rows_done: int, rows_total: int | None, elapsed: float) -> tuple[float | None, float | None]:
    """Rows per second and seconds left while reading (None when unknown)."""
    if elapsed <= 0 or rows_done <= 0:
        return None, None
    rate = rows_done / elapsed
    if not rows_total or rows_done >= rows_total:
        return rate, None
    return rate, (rows_total - rows_done) / rate
