"""Error text that is safe to store: one helper for every job that records a row's failure.

PostgreSQL refuses a NUL byte in text (DataError) and an encoder refuses a lone surrogate; an
error message carries whatever a provider, a driver or a user sent. Storing such a message raw
turns one failing row into a failing transaction, the batch's, so the row is never recorded and
is first in line again next run. Every job that writes an exception into the database goes
through `error_text`.
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from scheduler.locks import LeaseLost

REPLACEMENT = "\ufffd"

# Exceptions that end the run, not a row: a batch job that records a row's failure and goes on
# must let these through (`except RUN_INTERRUPTS: raise` before `except Exception`). Both are
# Exception subclasses: caught as a row's error, the soft time limit would blame the row and
# keep running until the hard kill, and a lost lease would keep writing without the lock.
RUN_INTERRUPTS: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded, LeaseLost)


def soft_time_limit_reached(exc: BaseException) -> bool:
    """True when `exc` is Celery's soft time limit, or was raised while handling it: a soft
    limit raised inside a query leaves the connection busy, and the next statement (a rollback,
    a row's failure record) fails with "another command is already in progress" or a
    TransactionManagementError that hides the real cause."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, SoftTimeLimitExceeded):
            return True
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
    return False


def error_text(exc: BaseException, *, limit: int = 2000) -> str:
    """`"<ExceptionType>: <message>"`, storable in any text column: a NUL byte becomes U+FFFD,
    a lone surrogate "?", and the result is at most `limit` characters (cut with a trailing "…").
    Never raises, even when the exception's `__str__` does."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        message = "<unprintable error>"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = text.replace("\x00", REPLACEMENT)
    text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> "?"
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text
