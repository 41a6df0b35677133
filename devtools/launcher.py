"""`make run`: the whole platform on one machine, embedded servers where none is configured.

    python -m devtools.launcher [--no-demo] [--profile test|production]

Starts embedded PostgreSQL and Redis under var/ (unless DATABASE_URL / REDIS_URL are set),
migrates, creates a development superuser, applies the schedules, loads demo data into an empty
database, then runs web, workers, beat, the watchdog, Flower and simulated players
(`manage.py simulate`, not with --no-demo) under honcho (Procfile). Ctrl-C or SIGTERM stops
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

from core.env import ConfigError, env_int
from devtools.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    _die_with_parent,
    log,
    port_is_free,
)

ROOT = Path(__file__).resolve().parent.parent
# Fixed in the Procfile (the URLs a newcomer is told); checked before anything starts.
PROCFILE_PORTS = {8000: "web (gunicorn)", 5555: "Flower"}


def var_dir() -> Path:
    """Embedded servers' data and the development logins: JOBSITE_VAR_DIR, default var/."""
    return Path(os.environ.get("JOBSITE_VAR_DIR") or ROOT / "var").resolve()


def _credentials() -> dict[str, str]:
    """Development logins, generated once and kept in var/ (mode 600), printed at every start."""
    path = var_dir() / "dev-credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    creds = {"username": "admin", "password": secrets.token_urlsafe(12)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(creds))
    return creds


def _require_procfile_ports() -> None:
    for port, name in PROCFILE_PORTS.items():
        if not port_is_free(port):
            raise EmbeddedServerError(
                f"port {port} on 127.0.0.1 is taken, so {name} cannot start. Stop whatever "
                f"listens there (another `make run`? see `ss -ltnp 'sport = :{port}'`)."
            )


def _start_servers(started: list[EmbeddedPostgres | EmbeddedRedis]) -> None:
    """Appends each server as it starts, so that a failure later still stops the earlier ones."""
    var = var_dir()
    if "DATABASE_URL" not in os.environ:
        port = env_int("JOBSITE_PG_PORT", 54329, minimum=1024, maximum=65535)
        pg = EmbeddedPostgres(var / "postgres" / "data", port)
        pg.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log(f"starting embedded PostgreSQL on 127.0.0.1:{port} (data in {var / 'postgres'})")
        started.append(pg.start())
        os.environ["DATABASE_URL"] = pg.url
    if "REDIS_URL" not in os.environ:
        port = env_int("JOBSITE_REDIS_PORT", 63799, minimum=1024, maximum=65535)
        redis = EmbeddedRedis(var / "redis" / "data", port)
        log(f"starting embedded Redis on 127.0.0.1:{port} (data in {var / 'redis'})")
        started.append(redis.start())
        os.environ["REDIS_URL"] = redis.url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _require_reachable() -> None:
    """One clear line, not a traceback, when a configured server does not answer."""
    import redis
    from django.conf import settings
    from django.db import OperationalError, connection

    db = settings.DATABASES["default"]
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        reason = _first_line(exc)
        raise EmbeddedServerError(
            f"PostgreSQL at {db['HOST']}:{db['PORT']} (DATABASE_URL) does not answer: {reason}. "
            "Start it, correct DATABASE_URL, or unset DATABASE_URL to use the embedded server."
        ) from None
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        where = client.connection_pool.connection_kwargs
        raise EmbeddedServerError(
            f"Redis at {where.get('host')}:{where.get('port')} (REDIS_URL) does not answer: "
            f"{_first_line(exc)}. Start it, correct REDIS_URL, or unset REDIS_URL to use the "
            "embedded server."
        ) from None
    finally:
        client.close()


def _prepare_database(creds: dict[str, str], profile: str, demo: bool) -> None:
    import django
    from django.core.management import call_command, get_commands

    django.setup()
    _require_reachable()
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


def _procfile_names() -> list[str]:
    return [
        line.split(":", 1)[0].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _run_processes(creds: dict[str, str], *, demo: bool) -> int:
    env = dict(os.environ)
    env.setdefault("FLOWER_BASIC_AUTH", f"{creds['username']}:{creds['password']}")
    # The Procfile names `gunicorn` and `celery`: those of this virtual environment, which
    # `make run` does not activate.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # `--env /dev/null`: honcho would otherwise load .env (compose's file) over our environment,
    # so its processes could talk to other servers than the ones just started and migrated.
    honcho = [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")]
    honcho += ["--env", os.devnull]
    if not demo:  # `simulate` keeps playing demo games so that the jobs have real work
        honcho += [name for name in _procfile_names() if name != "simulate"]
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
        description="Run web, workers, beat, the watchdog and Flower on this machine; embedded "
        "PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset.",
    )
    parser.add_argument(
        "--profile",
        choices=["test", "production"],
        default="test",
        help="schedule profile to apply (default: test, every job every minute)",
    )
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="no demo data and no simulated players (manage.py seed_demo / simulate)",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ["JOBSITE_PROFILE"] = args.profile  # retention ages follow the profile
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        _require_procfile_ports()
        _start_servers(started)
        creds = _credentials()
        _prepare_database(creds, args.profile, demo=not args.no_demo)
        log(
            "admin  http://127.0.0.1:8000/admin/  (login: "
            f"{creds['username']} / {creds['password']})"
        )
        log(
            f"flower http://127.0.0.1:5555/        (login: {creds['username']} / "
            f"{creds['password']})"
        )
        log("health http://127.0.0.1:8000/healthz   Ctrl-C stops everything")
        return _run_processes(creds, demo=not args.no_demo)
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
