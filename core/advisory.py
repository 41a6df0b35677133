"""PostgreSQL advisory locks: every key of the project in one enum, never renumbered.

A key that changes number between two deploys would let an old and a new process hold "the
same" lock at once; add new members at the end with a new number and never reuse a retired one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

from django.db import DatabaseError, connection


class AdvisoryLock(IntEnum):
    # One watchdog pass at a time (monitoring.watchdog): a second watchdog waits for the next pass.
    WATCHDOG_PASS = 7_301_001


@contextmanager
def advisory_lock_try(key: AdvisoryLock) -> Iterator[bool]:
    """Try the session-level lock `key` without waiting; yields whether it was taken.

    Session-level, not transaction-level, because what it guards spans several transactions (and
    network calls that must not sit inside one). A process that dies loses its session, and the
    lock with it, so a crashed holder never blocks the next one.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [int(key)])
        taken = bool(cursor.fetchone()[0])
    try:
        yield taken
    finally:
        if taken:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [int(key)])
            except DatabaseError:
                connection.close()  # the session, and the lock with it, ends here
