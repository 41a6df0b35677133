"""Error text that is safe to store: one helper for every job that records a row's failure.

PostgreSQL refuses a NUL byte in text (DataError) and an encoder refuses a lone surrogate; an
error message carries whatever a provider, a driver or a user sent. Storing such a message raw
turns one failing row into a failing transaction, the batch's, so the row is never recorded and
is first in line again next run. Every job that writes an exception into the database goes
through `error_text`.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


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
