"""`make run`: the whole platform on one machine, embedded servers where none is configured.

    python -m jobsite.launcher [--no-demo] [--profile test|production]

Starts embedded PostgreSQL and Redis under var/ (unless DATABASE_URL / REDIS_URL are set),
migrates, creates a development superuser, applies the schedules, loads demo data into an empty
database, then runs web, workers, beat and Flower under honcho (Procfile). Ctrl-C or SIGTERM stops
everything it started; the data stays under var/ for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from jobsite.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    _die_with_parent,
    log,
)
from jobsite.env import ConfigError, env_int

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def _credentials() -> dict[str, str]:
    """Development logins, generated once and kept in var/ (mode 600), printed at every start."""
    path = VAR / "dev-credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    creds = {"username": "admin", "password": secrets.token_urlsafe(12)}
    VAR.mkdir(exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(creds))
    return creds


def _start_servers() -> list[EmbeddedPostgres | EmbeddedRedis]:
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    if "DATABASE_URL" not in os.environ:
        port = env_int("JOBSITE_PG_PORT", 54329, minimum=1024, maximum=65535)
        pg = EmbeddedPostgres(VAR / "postgres" / "data", port)
        pg.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log(f"starting embedded PostgreSQL on 127.0.0.1:{port} (data in var/postgres)")
        started.append(pg.start())
        os.environ["DATABASE_URL"] = pg.url
    if "REDIS_URL" not in os.environ:
        port = env_int("JOBSITE_REDIS_PORT", 63799, minimum=1024, maximum=65535)
        redis = EmbeddedRedis(VAR / "redis" / "data", port)
        log(f"starting embedded Redis on 127.0.0.1:{port} (data in var/redis)")
        started.append(redis.start())
        os.environ["REDIS_URL"] = redis.url
    return started


def _prepare_database(creds: dict[str, str], profile: str, demo: bool) -> None:
    import django
    from django.core.management import call_command, get_commands

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    if not user_model.objects.filter(username=creds["username"]).exists():
        user_model.objects.create_superuser(creds["username"], "", creds["password"])
        log(f"created superuser {creds['username']!r}")
    commands = get_commands()
    if "schedules" in commands:
        call_command("schedules", "apply", "--profile", profile)
    if demo and "seed_demo" in commands:
        call_command("seed_demo", "--if-empty")
    from django.db import connections

    connections.close_all()


def _run_processes(creds: dict[str, str]) -> int:
    env = dict(os.environ)
    env.setdefault("FLOWER_BASIC_AUTH", f"{creds['username']}:{creds['password']}")
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")]
    process = subprocess.Popen(  # noqa: S603
        honcho, cwd=ROOT, env=env, preexec_fn=lambda: _die_with_parent(signal.SIGTERM)
    )

    def forward(signum: int, _frame: FrameType | None) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make run",
        description="Run web, workers, beat and Flower on this machine; embedded PostgreSQL and "
        "Redis when DATABASE_URL / REDIS_URL are unset.",
    )
    parser.add_argument(
        "--profile",
        choices=["test", "production"],
        default="test",
        help="schedule profile to apply (default: test, every job every minute)",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not load demo data")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    os.environ.setdefault("DEBUG", "1")
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        started = _start_servers()
        creds = _credentials()
        _prepare_database(creds, args.profile, demo=not args.no_demo)
        log("admin  http://127.0.0.1:8000/admin/  (login: "
            f"{creds['username']} / {creds['password']})")  # fmt: skip
        log(f"flower http://127.0.0.1:5555/        (login: {creds['username']} / "
            f"{creds['password']})")  # fmt: skip
        log("health http://127.0.0.1:8000/healthz   Ctrl-C stops everything")
        return _run_processes(creds)
    except (EmbeddedServerError, ConfigError) as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        for server in reversed(started):
            server.stop()
        if started:
            log("embedded servers stopped")


if __name__ == "__main__":
    sys.exit(main())
