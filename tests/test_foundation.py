"""The foundation: compose file, image, configuration, deploy checks, health, embedded servers.

Subprocess tests run `manage.py` with the suite's environment (the plugin's DATABASE_URL /
REDIS_URL and test settings) plus the variables each test is about.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from ruamel.yaml import YAML

from devtools.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError, free_port
from jobsite.celery import app

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _compose() -> dict:
    return YAML(typ="safe").load((ROOT / "compose.yaml").read_text())


def _manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _processes() -> list[tuple[int, int, str]]:
    """(pid, ppid, command line) of every live process; zombies count as gone."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        pid, ppid, stat, args = [*line.split(None, 3), ""][:4]
        if not stat.startswith("Z"):
            rows.append((int(pid), int(ppid), args))
    return rows


# ---------------------------------------------------------------------------------------------
# compose.yaml and the image
# ---------------------------------------------------------------------------------------------


@pytest.mark.process
def test_compose_file_validates_against_the_compose_specification():
    # check-jsonschema ships the Compose spec's schema: no network needed.
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.process
def test_the_compose_validation_rejects_an_unknown_key(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text((ROOT / "compose.yaml").read_text() + "\n  bogus: {image: x, frobnicate: 1}\n")
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "frobnicate" in result.stdout


def _commands(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def test_compose_runs_exactly_one_beat():
    services = _compose()["services"]
    beats = [name for name, s in services.items() if re.search(r"\bbeat\b", _commands(s))]
    assert beats == ["beat"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "jobsite", "beat"]
    assert services["beat"]["deploy"]["replicas"] == 1


def test_compose_runs_the_watchdog_beside_beat():
    services = _compose()["services"]
    watchdogs = [name for name, s in services.items() if "watchdog" in _commands(s)]
    assert watchdogs == ["watchdog"]
    assert services["watchdog"]["command"] == ["python", "manage.py", "watchdog"]
    assert services["watchdog"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert "watchdog: python manage.py watchdog" in (ROOT / "Procfile").read_text()


def test_compose_gives_flower_its_credentials_through_the_environment_only():
    flower = _compose()["services"]["flower"]
    assert "basic" not in _commands(flower).lower()  # never on the command line (ps shows it)
    assert flower["command"][:4] == ["celery", "-A", "jobsite", "flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    # The shared Django environment reaches Flower too (it needs the broker and settings).
    assert flower["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    # Flower's password does not reach the other containers through .env.
    services = _compose()["services"]
    for name in ("migrate", "web", "worker", "worker-long", "beat", "watchdog"):
        assert services[name]["environment"]["FLOWER_BASIC_AUTH"] == "", name


def test_compose_requires_the_secrets_and_starts_processes_in_order():
    services = _compose()["services"]
    django = ["migrate", "web", "worker", "worker-long", "beat", "watchdog", "flower"]
    for name in django:
        env = services[name]["environment"]
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), name
        assert env["DEBUG"] == "0", name
        assert services[name]["build"]["dockerfile"] == "Dockerfile", name
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    for name in django[1:]:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert "collectstatic" in _commands(services["migrate"])
    assert services["migrate"]["restart"] == "no"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in ("postgres", "redis", "web", "worker", "worker-long", "flower"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "--bind=0.0.0.0:8000" in services["web"]["command"]
    assert services["web"]["command"][:2] == ["gunicorn", "jobsite.wsgi"]
    assert "--queues=default" in services["worker"]["command"]
    assert "--queues=long" in services["worker-long"]["command"]
    assert set(_compose()["volumes"]) >= {"postgres-data", "redis-data"}


def test_compose_redis_asks_for_a_password_that_every_client_sends():
    services = _compose()["services"]
    redis_service = services["redis"]
    assert redis_service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "requirepass" in _commands(redis_service)
    assert "--requirepass" not in _commands(redis_service)  # never on a command line (ps)
    assert "REDISCLI_AUTH" in " ".join(redis_service["healthcheck"]["test"])
    for name in ("migrate", "web", "worker", "worker-long", "beat", "flower"):
        url = services[name]["environment"]["REDIS_URL"]
        assert url == "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis:6379/0", name


def test_the_image_installs_the_lock_without_dev_tools_and_runs_as_a_normal_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.12-slim\b", dockerfile, re.M)
    assert "uv sync --frozen --no-default-groups" in dockerfile  # no dev tools, no pgserver
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}
    assert "collectstatic" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".env", ".git", "devtools"} <= set(ignored)


def _variables_read_by(path: Path) -> set[str]:
    source = path.read_text()
    names = set(re.findall(r'\benv_\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'"([A-Z][A-Z0-9_]+)" not in os\.environ', source))
    return names


def test_env_example_documents_every_variable_of_settings_and_launcher():
    documented = set(
        re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    read = _variables_read_by(ROOT / "jobsite" / "settings.py")
    read |= _variables_read_by(ROOT / "devtools" / "launcher.py")
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "JOBSITE_VAR_DIR"} <= read  # the scan works
    read |= {"FLOWER_BASIC_AUTH"}  # read by Flower itself
    assert read - documented == set()


def test_env_example_documents_the_offset_variable_of_every_registered_job():
    from scheduler.registry import all_jobs

    text = (ROOT / ".env.example").read_text()
    shipped = [job for job in all_jobs() if not job.service.__module__.startswith("tests.")]
    assert len(shipped) >= 9  # the scan sees the apps' jobs, not only the suite's samples
    missing = [job.env_name for job in shipped if f"# {job.env_name}=" not in text]
    assert missing == []


def test_procfile_ports_are_those_the_launcher_checks():
    from devtools.launcher import PROCFILE_PORTS

    procfile = (ROOT / "Procfile").read_text()
    assert "--bind 127.0.0.1:8000" in procfile
    assert "--port=5555" in procfile
    assert set(PROCFILE_PORTS) == {8000, 5555}


# ---------------------------------------------------------------------------------------------
# manage.py: migrations, deploy checks, bad configuration
# ---------------------------------------------------------------------------------------------


@pytest.mark.process
def test_models_and_migrations_agree():
    result = _manage("makemigrations", "--check", "--dry-run", env=dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr


def _production_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD"):
        env.pop(name, None)  # the production defaults, not the suite's
    env.update(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="jobsite.example.com",
        **overrides,
    )
    return env


@pytest.mark.process
def test_deploy_checks_are_clean_under_production_settings():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.process
def test_deploy_checks_do_fail_on_a_weakened_production_setting():
    env = _production_env(SECURE_HSTS_SECONDS="0")
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "postgres://h:notaport/db"),
        ("REDIS_URL", "http://x"),
        ("CELERY_VISIBILITY_TIMEOUT", "abc"),
        ("DATABASE_PREPARED_STATEMENTS", "sometimes"),
        ("JOBSITE_PROFILE", "staging"),
        ("JOB_STAGGER_ENABLED", "maybe"),
        ("JOB_STAGGER_CLEANUP", "60"),
        ("GAMES_DAILY_POOL_SHARE", "101"),
        ("REFERRAL_TIER1_RATE", "0,10"),
        ("JOBSITE_ALERT_FAILURES", "three"),
    ],
)
@pytest.mark.process
def test_a_bad_value_stops_manage_py_with_one_line_naming_the_variable(variable, value):
    result = _manage("check", env={**os.environ, variable: value}, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert lines[0].startswith("configuration error: ")


@pytest.mark.process
@pytest.mark.parametrize(("value", "threshold"), [("1", "5"), ("0", "None")])
def test_prepared_statements_can_be_turned_off_for_pgbouncer(value, threshold):
    code = (
        "from django.db import connection as c; "
        "print(c.settings_dict['OPTIONS'].get('prepare_threshold'))"
    )
    env = {**os.environ, "DEBUG": "1", "DATABASE_PREPARED_STATEMENTS": value}
    result = _manage("shell", "-c", code, env=env, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == threshold, result.stderr


@pytest.mark.process
@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_bad_value_stops_celery_with_one_line_naming_the_variable(command):
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "jobsite", command],
        cwd=ROOT,
        env={**os.environ, "DEBUG": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert lines == [
        "configuration error: DEBUG='maybe' is not a boolean; use one of 1/0, "
        "true/false, yes/no, on/off"
    ]


# ---------------------------------------------------------------------------------------------
# Settings are read once, in settings.py, and diffsettings shows them all
# ---------------------------------------------------------------------------------------------

# Modules allowed to read the environment: settings and its helpers, the development tools (which
# set it up for the processes they start), Flower's own configuration, tests and benchmarks.
# jobsite/celery.py, wsgi.py, asgi.py and manage.py only default DJANGO_SETTINGS_MODULE.
_MAY_READ_THE_ENVIRONMENT = {
    "jobsite/settings.py",
    "core/env.py",
    "devtools/embedded.py",
    "devtools/gendocs.py",  # the benchmark report names the servers it ran on
    "devtools/launcher.py",
    "devtools/pytest_plugin.py",
    "flowerconfig.py",
}
_ENVIRONMENT_READ = re.compile(
    r"os\.environ(\.get|\[)|os\.getenv\(|\benv_(int|str|bool|list|float|decimal|url)\("
)


def test_no_module_outside_settings_reads_the_environment():
    skipped = {".venv", ".venv-uv", "tests", "bench", "var", "node_modules", ".git"}
    offenders = [
        f"{path}:{number}: {line.strip()}"
        for path in sorted(ROOT.rglob("*.py"))
        if not skipped & set(path.relative_to(ROOT).parts)
        and str(path.relative_to(ROOT)) not in _MAY_READ_THE_ENVIRONMENT
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _ENVIRONMENT_READ.search(line)
    ]
    assert offenders == []


def test_diffsettings_shows_every_settings_group():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("diffsettings", "--all", stdout=out)
    shown = dict(line.split(" = ", 1) for line in out.getvalue().splitlines() if " = " in line)
    for group in ("SCHEDULER", "GAMES", "REFERRALS", "ALERTS"):
        assert group in shown
    assert "StaggerSettings(enabled=True" in shown["SCHEDULER"]
    assert "RetentionSettings(succeeded_seconds=" in shown["SCHEDULER"]
    assert "session_expiry_minutes=30" in shown["GAMES"]
    assert "rates={1: Decimal('0.10')" in shown["REFERRALS"]
    assert "failures=3" in shown["ALERTS"]
    for flat in ("OPS_TRUSTED_PROXIES", "HEALTH_BEAT_DOWN_AFTER", "HEALTH_BEAT_REQUIRED"):
        assert flat in shown


def test_diffsettings_does_not_print_webhook_secrets(settings):
    from dataclasses import replace
    from io import StringIO

    from django.core.management import call_command

    settings.REFERRALS = replace(settings.REFERRALS, webhook_secret="s3cret-payout-key")
    settings.ALERTS = replace(settings.ALERTS, webhook_url="https://hooks.example.com/T/B/s3cret")
    out = StringIO()
    call_command("diffsettings", "--all", stdout=out)
    assert "s3cret" not in out.getvalue()


# ---------------------------------------------------------------------------------------------
# Celery: JSON only (the worker-side refusal is in tests/integration/test_worker.py)
# ---------------------------------------------------------------------------------------------


def test_celery_accepts_and_writes_json_only():
    assert app.conf.accept_content == ["json"]
    assert app.conf.result_accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"


# ---------------------------------------------------------------------------------------------
# /healthz
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_ok(client, settings):
    assert settings.SECURE_SSL_REDIRECT is False  # the suite's setting; /healthz is exempt anyway
    response = client.get("/healthz")
    assert response.status_code == 200
    # beat and the watchdog: neither ran against this database, so both are down; that is
    # reported, and only /healthz/beat and /healthz/watchdog (or HEALTH_BEAT_REQUIRED=1) fail
    # for it (tests/ops/test_health_metrics.py).
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "beat": "down", "watchdog": "down"},
    }
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_healthz_answers_503_when_the_broker_is_down(client, monkeypatch):
    # Celery reads this variable before its configuration: a broker where nothing listens.
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "down"
    assert client.get("/healthz/ready").status_code == 503


# ---------------------------------------------------------------------------------------------
# Embedded servers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _assert_nothing_left(server_pid: int, folder: Path) -> None:
    left = [row for row in _processes() if row[0] == server_pid or row[1] == server_pid]
    left += [row for row in _processes() if str(folder) in row[2]]
    assert left == []


@pytest.mark.process
def test_embedded_redis_starts_on_a_free_port_and_stops_leaving_no_process(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis" / "data", free_port(), persistent=False).start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.close()
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.returncode is not None
    _assert_nothing_left(server.process.pid, tmp_path)
    assert (tmp_path / "redis" / "redis.log").exists()


@pytest.mark.process
def test_embedded_postgres_starts_on_a_free_port_and_stops_leaving_no_process(tmp_path):
    server = EmbeddedPostgres(tmp_path / "pg" / "data", free_port(), database="probe").start()
    try:
        with psycopg.connect(server.url.replace("postgres://", "postgresql://")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("probe",)
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.returncode is not None
    _assert_nothing_left(server.process.pid, tmp_path)


@pytest.mark.parametrize(
    ("make_server", "variable"),
    [
        (lambda tmp, port: EmbeddedPostgres(tmp / "pg" / "data", port), "JOBSITE_PG_PORT"),
        (lambda tmp, port: EmbeddedRedis(tmp / "redis" / "data", port), "JOBSITE_REDIS_PORT"),
    ],
    ids=["postgres", "redis"],
)
def test_a_taken_port_is_a_clear_error_naming_the_variable(
    tmp_path, taken_port, make_server, variable
):
    server = make_server(tmp_path, taken_port)
    with pytest.raises(EmbeddedServerError) as raised:
        server.start()
    message = str(raised.value)
    assert f"port {taken_port} on 127.0.0.1 is taken" in message
    assert variable in message
    assert server.process is None  # nothing was started
    assert not (tmp_path / "pg" / "data" / "PG_VERSION").exists()  # not even initdb


# ---------------------------------------------------------------------------------------------
# The launcher's errors (its full run is tests/test_launcher.py)
# ---------------------------------------------------------------------------------------------


def _launcher_env(var_dir: Path, **extra: str) -> dict[str, str]:
    jobsite = {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT"}
    env = {k: v for k, v in os.environ.items() if k not in jobsite}
    env.update(JOBSITE_VAR_DIR=str(var_dir), **extra)
    return env


def _launch(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devtools.launcher", "--no-demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _procfile_ports_free() -> bool:
    from devtools.embedded import port_is_free
    from devtools.launcher import PROCFILE_PORTS

    return all(port_is_free(port) for port in PROCFILE_PORTS)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("jobsite: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.process
@pytest.mark.xdist_group("procfile-ports")
def test_the_launcher_refuses_a_taken_embedded_port_and_leaves_nothing_running(
    tmp_path, taken_port
):
    if not _procfile_ports_free():
        pytest.skip("port 8000 or 5555 is taken (a `make run`?); stop it to run this test")
    # PostgreSQL starts first; the taken Redis port must stop it again.
    env = _launcher_env(
        tmp_path / "var", JOBSITE_PG_PORT=str(free_port()), JOBSITE_REDIS_PORT=str(taken_port)
    )
    line = _one_error_line(_launch(env))
    assert f"port {taken_port}" in line
    assert "JOBSITE_REDIS_PORT" in line
    assert [row for row in _processes() if str(tmp_path) in row[2]] == []


@pytest.mark.process
@pytest.mark.xdist_group("procfile-ports")
def test_the_launcher_refuses_a_taken_web_port_before_starting_anything(tmp_path):
    from devtools.embedded import port_is_free

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if port_is_free(8000):  # else it is taken already, which is what this test needs
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 8000))
            sock.listen()
        line = _one_error_line(_launch(_launcher_env(tmp_path / "var")))
    assert "port 8000 on 127.0.0.1 is taken" in line
    assert not (tmp_path / "var" / "postgres").exists()


@pytest.mark.process
@pytest.mark.xdist_group("procfile-ports")
def test_the_launcher_names_an_unreachable_database_in_one_line(tmp_path):
    if not _procfile_ports_free():
        pytest.skip("port 8000 or 5555 is taken (a `make run`?); stop it to run this test")
    env = _launcher_env(
        tmp_path / "var",
        DATABASE_URL=f"postgres://postgres:hunter2@127.0.0.1:{free_port()}/x",
        REDIS_URL=os.environ["REDIS_URL"],
    )
    line = _one_error_line(_launch(env))
    assert "(DATABASE_URL) does not answer" in line
    assert "hunter2" not in line


def test_dev_credentials_are_private(tmp_path, monkeypatch):
    from devtools import launcher

    monkeypatch.setenv("JOBSITE_VAR_DIR", str(tmp_path / "v"))
    first = launcher._credentials()
    path = tmp_path / "v" / "dev-credentials.json"
    assert path.stat().st_mode & 0o077 == 0
    assert json.loads(path.read_text()) == first
    assert launcher._credentials() == first  # generated once
