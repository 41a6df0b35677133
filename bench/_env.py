"""Servers for a benchmark: DATABASE_URL / REDIS_URL when set, embedded ones otherwise."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from devtools.gendocs import server_versions

# PostgreSQL's and Redis's versions, read while the servers of the last `servers()` ran (the
# runner records them with the results: embedded servers are gone by then).
VERSIONS: dict[str, str] = {}


@contextmanager
def servers() -> Iterator[None]:
    """Start what is missing, set Django up, migrate; stop and remove it all afterwards."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    scratch = Path(tempfile.mkdtemp(prefix="jobsite-bench-"))
    try:
        if "DATABASE_URL" not in os.environ:
            pg = EmbeddedPostgres(scratch / "pg" / "data", free_port(), database="bench")
            started.append(pg.start())
            os.environ["DATABASE_URL"] = pg.url
        if "REDIS_URL" not in os.environ:
            redis = EmbeddedRedis(scratch / "redis" / "data", free_port(), persistent=False)
            started.append(redis.start())
            os.environ["REDIS_URL"] = redis.url
        import django
        from django.core.management import call_command
        from django.db import OperationalError

        django.setup()
        try:
            call_command("migrate", interactive=False, verbosity=0)
        except OperationalError as exc:  # a DATABASE_URL naming a database that is not there
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise SystemExit(
                f"bench: DATABASE_URL cannot be used: {first} (create that database, or unset "
                "DATABASE_URL and REDIS_URL for embedded servers)"
            ) from None
        VERSIONS.update(server_versions(os.environ["DATABASE_URL"], os.environ["REDIS_URL"]))
        yield
    finally:
        from django.db import connections

        connections.close_all()
        for server in reversed(started):
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
