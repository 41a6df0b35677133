"""Job leases: a job never runs twice at once, on any number of workers.

The lease is a PostgreSQL row, not a Redis key, because what keeps money safe is the fencing check
in the same transaction as the write: `fence_check()` locks the lease row FOR SHARE and verifies the
token and expiry, so a holder that was paused past its TTL (and lost the lease) cannot commit. A new
acquisition UPDATEs that row and so waits for such a transaction to finish. A dead worker's lease
simply expires after its TTL; a live holder renews it from a heartbeat thread.
"""

from __future__ import annotations

import logging
import threading
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

# statement_timestamp(), not now(): the run path takes the lease in the transaction that claims
# the slot, and now() would be that transaction's start (earlier, if the claim waited on a lock).
_ACQUIRE = """
WITH lease AS (
INSERT INTO scheduler_joblease (job, token, holder_id, expires_at)
VALUES (%(job)s, 1, %(run)s, statement_timestamp() + make_interval(secs => %(ttl)s))
ON CONFLICT (job) DO UPDATE
    SET token = scheduler_joblease.token + 1,
        holder_id = EXCLUDED.holder_id,
        expires_at = EXCLUDED.expires_at
    WHERE scheduler_joblease.holder_id IS NULL
        OR scheduler_joblease.expires_at <= statement_timestamp()
RETURNING token
)
UPDATE scheduler_jobrun SET fence = lease.token FROM lease WHERE scheduler_jobrun.id = %(run)s
RETURNING lease.token
"""

_RENEW = """
UPDATE scheduler_joblease SET expires_at = now() + make_interval(secs => %(ttl)s)
WHERE job = %(job)s AND token = %(token)s AND expires_at > now()
"""

_RELEASE = """
UPDATE scheduler_joblease SET holder_id = NULL, expires_at = NULL
WHERE job = %(job)s AND token = %(token)s
"""

_FENCE = """
SELECT 1 FROM scheduler_joblease WHERE job = %s AND token = %s AND expires_at > now() FOR SHARE
"""


_SUCCEED_AND_RELEASE = """
WITH held AS (
    SELECT job FROM scheduler_joblease
    WHERE job = %(job)s AND token = %(token)s AND expires_at > now()
    FOR UPDATE
), done AS (
    UPDATE scheduler_jobrun
    SET status = 'succeeded', finished_at = %(now)s, duration_ms = %(ms)s, result = %(result)s
    WHERE id = %(run)s AND status = 'running' AND EXISTS (SELECT 1 FROM held)
    RETURNING id
)
UPDATE scheduler_joblease SET holder_id = NULL, expires_at = NULL
WHERE job = %(job)s AND token = %(token)s AND EXISTS (SELECT 1 FROM done)
RETURNING 1
"""


def succeed_and_release(lease: Lease, *, now: object, duration_ms: int, result: str) -> bool:
    """In one statement (one commit): mark the run succeeded and free the lease, only while the
    lease is still held (fencing). False when it was lost or the row was taken over."""
    params = {
        "job": lease.job,
        "token": lease.token,
        "run": lease.run_id,
        "now": now,
        "ms": duration_ms,
        "result": result,
    }
    with connection.cursor() as cursor:
        cursor.execute(_SUCCEED_AND_RELEASE, params)
        return cursor.fetchone() is not None


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
        cursor.execute(_RELEASE, {"job": lease.job, "token": lease.token})


def fence_check(lease: Lease | None = None) -> None:
    """Inside a transaction: raise LeaseLost unless `lease` (default: the current run's) is held.

    Services that move money call this in the transaction that writes. Outside a job run (a
    service called from a test or the shell) there is no lease and nothing to check.
    """
    lease = lease or _current.get()
    if lease is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(_FENCE, [lease.job, lease.token])
        if cursor.fetchone() is None:
            raise LeaseLost(f"job {lease.job!r} lost its lease (token {lease.token})")


def current_lease() -> Lease | None:
    return _current.get()


class _Heartbeat(threading.Thread):
    """Renews the lease every ttl/3 seconds, on its own database connection."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(name=f"lease-heartbeat-{lease.job}", daemon=True)
        self.lease = lease
        self.lost = threading.Event()
        self.released = False  # set when the run's final statement released the lease itself
        self._stop_event = threading.Event()

    def run(self) -> None:
        interval = max(1.0, self.lease.ttl / 3)
        try:
            while not self._stop_event.wait(interval):
                try:
                    close_old_connections()
                    if not lease_renew(self.lease):
                        logger.warning(
                            "job %s lost its lease (token %s)", self.lease.job, self.lease.token
                        )
                        self.lost.set()
                        return
                except Exception:
                    # A failed renewal is not yet a lost lease: the TTL leaves room for the next.
                    logger.exception("lease heartbeat of job %s failed", self.lease.job)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@contextmanager
def lease_held(lease: Lease) -> Iterator[_Heartbeat]:
    """Make `lease` the current one and keep it renewed until the block ends; then release it."""
    heartbeat = _Heartbeat(lease)
    token = _current.set(lease)
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
        _current.reset(token)
        try:
            if not heartbeat.released:
                lease_release(lease)
        except Exception:
            logger.exception(
                "releasing the lease of job %s failed; it expires in %ss", lease.job, lease.ttl
            )
