"""pytest plugin (loaded with `-p devtools.pytest_plugin`): real PostgreSQL and Redis for the suite.

DATABASE_URL / REDIS_URL set: the suite uses those servers (pytest-django creates its own
`test_<name>` database; give Redis a database number of its own). Unset: embedded PostgreSQL and
Redis start on free ports in a temporary folder for this session and are removed afterwards.

With pytest-xdist (`make test` runs `-n`), the controller starts the embedded servers once and its
workers inherit the URLs: one PostgreSQL holds a `test_<name>_gwN` database per worker and one
Redis a database number per worker (the configured base for gw0, base + N for gwN).

Django settings are read when pytest-django sets Django up in `pytest_load_initial_conftests`,
before any conftest, so the servers start in a wrapper of that hook.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path

import pytest

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

_started: list[EmbeddedPostgres | EmbeddedRedis] = []
_scratch: list[Path] = []

TEST_ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "jobsite.settings",
    "DEBUG": "0",
    "SECRET_KEY": "test-only-secret-key-not-for-production-0123456789abcdef",
    "SECURE_SSL_REDIRECT": "0",
    "LOG_LEVEL": "WARNING",
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, None, None]:
    for key, value in TEST_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if "DATABASE_URL" not in os.environ or "REDIS_URL" not in os.environ:
        scratch = Path(tempfile.mkdtemp(prefix="jobsite-test-"))
        _scratch.append(scratch)
        os.environ["JOBSITE_EMBEDDED_EPHEMERAL"] = "1"  # fsync off: data dies with the session
        os.environ["JOBSITE_TEST_EMBEDDED"] = "1"
        if "DATABASE_URL" not in os.environ:
            pg = EmbeddedPostgres(scratch / "pg" / "data", free_port()).start()
            _started.append(pg)
            os.environ["DATABASE_URL"] = pg.url
        if "REDIS_URL" not in os.environ:
            redis = EmbeddedRedis(scratch / "redis" / "data", free_port(), persistent=False)
            _started.append(redis.start())
            os.environ["REDIS_URL"] = redis.url
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        # pytest-xdist: pytest-django gives each worker its own database (test_<name>_gwN);
        # each worker needs its own Redis database too, or one worker's Celery threads would
        # take another's messages and write them into the wrong database. The controller runs
        # no test, so gw0 keeps the configured database.
        os.environ["REDIS_URL"] = _redis_database(os.environ["REDIS_URL"], int(worker[2:]))
    if os.environ.get("JOBSITE_TEST_FLUSH_REDIS") == "1":
        _flush_configured_redis(os.environ["REDIS_URL"])
    return (yield)


REDIS_DATABASES = 16  # Redis' default `databases`


def _redis_database(url: str, step: int) -> str:
    """`url` moved `step` databases on from its own; refused past Redis' last database rather
    than wrapping into a database that someone else's REDIS_URL may name."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    if base + step >= REDIS_DATABASES:
        raise pytest.UsageError(
            f"pytest-xdist worker gw{step} would need Redis database {base + step} of {url}, "
            f"and Redis has {REDIS_DATABASES} (0-{REDIS_DATABASES - 1}): run fewer workers "
            f"(`make test TEST_WORKERS={REDIS_DATABASES - base}`) or give REDIS_URL a lower "
            "database number"
        )
    return urlunsplit(parts._replace(path=f"/{base + step}"))


def _flush_configured_redis(url: str) -> None:
    """Opt-in (CI): empty the configured Redis database, so that messages left by an interrupted
    run cannot reach this run's workers. Never done by default: REDIS_URL may be shared."""
    import redis

    redis.Redis.from_url(url).flushdb()


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = "embedded (this session)" if _started else "from DATABASE_URL / REDIS_URL"
    return [f"jobsite: PostgreSQL and Redis {where}"]


# Durations of the long tests, so that they start first (tests/conftest.py orders by them) and
# the wall clock of a parallel run is the longest chain rather than the last long test's end.
DURATIONS_FILE = Path(__file__).resolve().parents[1] / "tests" / "durations.json"
DURATIONS_MIN_SECONDS = 2.0  # shorter tests are filler: their order does not matter


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"merge this run's test durations of {DURATIONS_MIN_SECONDS:.0f} s and more into "
        "tests/durations.json (the order in which a parallel run starts the long tests)",
    )


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Under xdist this runs on the controller too, with each worker's reports.
    if report.outcome != "rerun":
        _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if not config.getoption("store_durations") or hasattr(config, "workerinput"):
        return
    import json

    known = json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    for nodeid, seconds in _measured.items():
        if seconds >= DURATIONS_MIN_SECONDS:
            known[nodeid] = round(seconds)
        else:
            known.pop(nodeid, None)
    DURATIONS_FILE.write_text(json.dumps(dict(sorted(known.items())), indent=0) + "\n")


def pytest_unconfigure(config: pytest.Config) -> None:
    while _started:
        _started.pop().stop()
    while _scratch:
        shutil.rmtree(_scratch.pop(), ignore_errors=True)
