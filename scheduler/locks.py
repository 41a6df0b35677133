"""Job leases: a job never runs twice at once, on any number of workers.

The lease is a PostgreSQL row, not a Redis key, because what keeps money safe is the fencing check
in the same transaction as the write: `fence_check()` locks the lease row FOR SHARE and verifies the
token and expiry, so a holder that was paused past its TTL (and lost the lease) cannot commit. A new
acquisition UPDATEs that row and so waits for such a transaction to finish. A dead worker's lease
simply expires after its TTL; a live holder renews it from a heartbeat thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.db import close_old_connections, connection, connections

logger = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """The run no longer holds its job's lease: it must not record success or move money."""


@dataclass(frozen=True)
class Lease:
    job: str
    token: int
    run_id: int
    ttl: int


_current: ContextVar[Lease | None] = ContextVar("jobsite_current_lease", default=None)

# The lease's SQL, all of it (scheduler.ledger's two run-path statements embed the pieces marked
# public, so that the claim takes the lease and the success releases it in the same statement).

# Take the job's lease for the run whose id is `{holder}` (SQL: a parameter, or a column of the
# CTE `{source}` names): a new row, or the existing one when it is free or expired, its token one
# higher. No row comes back when another run holds it. statement_timestamp(), not now(): the run
# path takes the lease in the transaction that claims the slot, and now() would be that
# transaction's start (earlier, if the claim waited on a lock).
LEASE_TAKE = """INSERT INTO scheduler_joblease (job, token, holder_id, expires_at)
    SELECT %(job)s, 1, {holder}, statement_timestamp() + make_interval(secs => %(ttl)s){source}
    ON CONFLICT (job) DO UPDATE
        SET token = scheduler_joblease.token + 1,
            holder_id = EXCLUDED.holder_id,
            expires_at = EXCLUDED.expires_at
        WHERE scheduler_joblease.holder_id IS NULL
            OR scheduler_joblease.expires_at <= statement_timestamp()
    RETURNING token"""

# The lease row, while the token %(token)s still holds it (the fencing check); the caller locks it.
LEASE_HELD = """SELECT job FROM scheduler_joblease
    WHERE job = %(job)s AND token = %(token)s AND expires_at > now()"""

# Give the lease back (the caller may add a condition with AND).
LEASE_RELEASE = """UPDATE scheduler_joblease SET holder_id = NULL, expires_at = NULL
    WHERE job = %(job)s AND token = %(token)s"""

_ACQUIRE = f"""
WITH lease AS (
{LEASE_TAKE.format(holder="%(run)s", source="")}
)
UPDATE scheduler_jobrun SET fence = lease.token FROM lease WHERE scheduler_jobrun.id = %(run)s
RETURNING lease.token
"""  # noqa: S608 (constants only)

_RENEW = """
UPDATE scheduler_joblease SET expires_at = now() + make_interval(secs => %(ttl)s)
WHERE job = %(job)s AND token = %(token)s AND expires_at > now()
"""

_FENCE = f"{LEASE_HELD} FOR SHARE"


def lease_acquire(*, job: str, run_id: int, ttl: int) -> Lease | None:
    """Take the job's lease for `ttl` seconds and note its token on the run; None if held."""
    with connection.cursor() as cursor:
        cursor.execute(_ACQUIRE, {"job": job, "run": run_id, "ttl": ttl})
        row = cursor.fetchone()
    return Lease(job=job, token=row[0], run_id=run_id, ttl=ttl) if row else None


def lease_renew(lease: Lease) -> bool:
    """Extend the lease; False if it was lost (expired, or taken by a newer run)."""
    with connection.cursor() as cursor:
        cursor.execute(_RENEW, {"job": lease.job, "token": lease.token, "ttl": lease.ttl})
        renewed = cursor.rowcount == 1
        if renewed:
            cursor.execute(
                "UPDATE scheduler_jobrun SET heartbeat_at = now() WHERE id = %s", [lease.run_id]
            )
    return renewed


def lease_release(lease: Lease) -> None:
    with connection.cursor() as cursor:
        cursor.execute(LEASE_RELEASE, {"job": lease.job, "token": lease.token})


_FORGET_HOLDERS = """
UPDATE scheduler_joblease SET holder_id = NULL
WHERE holder_id = ANY(%(runs)s) AND (expires_at IS NULL OR expires_at <= now())
"""

_LIVE_HOLDERS = """
SELECT holder_id FROM scheduler_joblease WHERE holder_id = ANY(%(runs)s) AND expires_at > now()
"""


def lease_holders_forget(*, run_ids: list[int]) -> set[int]:
    """Before finished runs are deleted: clear them as holders of leases that have expired (a
    run that failed or was lost keeps its name on the lease until the next acquisition, but an
    expired lease is not held: acquiring treats it like a free one). Returns the runs among
    `run_ids` that still name an unexpired lease; those must be kept until it expires.
    """
    with connection.cursor() as cursor:
        cursor.execute(_FORGET_HOLDERS, {"runs": run_ids})
        cursor.execute(_LIVE_HOLDERS, {"runs": run_ids})
        return {row[0] for row in cursor.fetchall()}


def fence_check(lease: Lease | None = None) -> None:
    """Inside a transaction: raise LeaseLost unless `lease` (default: the current run's) is held.

    Services that move money call this in the transaction that writes. Outside a job run (a
    service called from a test or the shell) there is no lease and nothing to check.
    """
    lease = lease or _current.get()
    if lease is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(_FENCE, {"job": lease.job, "token": lease.token})
        if cursor.fetchone() is None:
            raise LeaseLost(f"job {lease.job!r} lost its lease (token {lease.token})")


def current_lease() -> Lease | None:
    return _current.get()


class Heartbeat:
    """One held lease as the renewer sees it: `lost` is set when a renewal found it gone."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.interval = max(1.0, lease.ttl / 3)
        self.due = time.monotonic() + self.interval
        self.lost = threading.Event()
        self.released = False  # set when the run's final statement released the lease itself


class _Renewer(threading.Thread):
    """One thread per process renews every lease the process holds, each every ttl/3 seconds,
    on its own database connection. A thread per run cost a start and a join on every run.

    A renewal racing the run's release is harmless: both name the token, and a released lease
    has no expiry left to extend, so the renewal matches nothing.
    """

    def __init__(self) -> None:
        super().__init__(name="lease-renewer", daemon=True)
        self.pid = os.getpid()
        self._held: set[Heartbeat] = set()
        self._lock = threading.Lock()

    def add(self, heartbeat: Heartbeat) -> None:
        # No wake-up: the loop looks at least every second, and a lease is first due no sooner
        # than a second after it was added. Waking it would cost every run a thread switch.
        with self._lock:
            self._held.add(heartbeat)

    def discard(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._held.discard(heartbeat)

    def run(self) -> None:
        while True:
            with self._lock:
                next_due = min((h.due for h in self._held), default=None)
            wait = math.inf if next_due is None else next_due - time.monotonic()
            time.sleep(min(1.0, max(0.0, wait)))
            now = time.monotonic()
            with self._lock:
                due = [h for h in self._held if h.due <= now]
            for heartbeat in due:
                heartbeat.due = now + heartbeat.interval
                self._renew(heartbeat)
            with self._lock:
                idle = not self._held
            if idle:
                connections.close_all()  # no connection sits open between runs

    def _renew(self, heartbeat: Heartbeat) -> None:
        lease = heartbeat.lease
        try:
            close_old_connections()
            if not lease_renew(lease):
                logger.warning("job %s lost its lease (token %s)", lease.job, lease.token)
                heartbeat.lost.set()
                self.discard(heartbeat)
        except Exception:
            # A failed renewal is not yet a lost lease: the TTL leaves room for the next.
            logger.exception("lease heartbeat of job %s failed", lease.job)
            with contextlib.suppress(Exception):
                connections.close_all()


_renewer: _Renewer | None = None
_renewer_lock = threading.Lock()


def _the_renewer() -> _Renewer:
    """This process's renewer; a forked child (prefork pool) starts its own."""
    global _renewer
    with _renewer_lock:
        if _renewer is None or _renewer.pid != os.getpid() or not _renewer.is_alive():
            _renewer = _Renewer()
            _renewer.start()
        return _renewer


@contextmanager
def lease_held(lease: Lease) -> Iterator[Heartbeat]:
    """Make `lease` the current one and keep it renewed until the block ends; then release it."""
    heartbeat = Heartbeat(lease)
    renewer = _the_renewer()
    token = _current.set(lease)
    renewer.add(heartbeat)
    try:
        yield heartbeat
    finally:
        renewer.discard(heartbeat)
        _current.reset(token)
        try:
            if not heartbeat.released:
                lease_release(lease)
        except Exception:
            logger.exception(
                "releasing the lease of job %s failed; it expires in %ss", lease.job, lease.ttl
            )
