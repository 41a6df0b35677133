"""`make run` itself: the launcher with no DATABASE_URL / REDIS_URL, as a newcomer runs it.

It starts embedded PostgreSQL and Redis (data in a temporary JOBSITE_VAR_DIR, on free ports),
web on 127.0.0.1:8000 and Flower on 127.0.0.1:5555 (fixed in the Procfile), and must stop every
process it started on Ctrl-C, and even when it is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.embedded import free_port, port_is_free
from devtools.launcher import PROCFILE_PORTS
from tests.http import http_status

ROOT = Path(__file__).resolve().parent.parent
ADMIN_LOGIN = "http://127.0.0.1:8000/admin/login/"
HEALTH = "http://127.0.0.1:8000/healthz"
FLOWER = "http://127.0.0.1:5555/"
START_TIMEOUT = 90
STOP_TIMEOUT = 15
# Variables of the suite (or of a developer's shell) that a newcomer's `make run` does not have.
NOT_A_NEWCOMERS = {
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "SECURE_SSL_REDIRECT",
    "LOG_LEVEL",
    "FLOWER_BASIC_AUTH",
    "JOBSITE_EMBEDDED_EPHEMERAL",
    "JOBSITE_TEST_EMBEDDED",
    "JOBSITE_JOB_MODULES",
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(START_TIMEOUT * 2 + 120),
    # web and Flower listen on the Procfile's fixed ports: one launcher test at a time, on one
    # pytest-xdist worker with the launcher tests of test_foundation.py
    pytest.mark.xdist_group("procfile-ports"),
]


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) of every live process (zombies count as gone)."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    table = {}
    for line in out.splitlines():
        pid, ppid, stat, args = [*line.split(None, 3), ""][:4]
        if not stat.startswith("Z"):
            table[int(pid)] = (int(ppid), args)
    return table


def _descendants(root: int) -> dict[int, str]:
    table = _process_table()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, args) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = args
                frontier.append(pid)
    return found


class Launch:
    """One `python -m devtools.launcher --no-demo`, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.launcher", "--no-demo"],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, condition, timeout: float = START_TIMEOUT) -> float:
        """Seconds since start until `condition()` held; fails with the launcher's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                pytest.fail(f"the launcher exited ({self.process.returncode}) before {what}:\n"
                            + self.output()[-4000:])  # fmt: skip
            time.sleep(0.25)
        pytest.fail(f"no {what} within {timeout} s:\n" + self.output()[-4000:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


@pytest.fixture
def newcomer(tmp_path) -> Iterator[dict]:
    """The environment of `make run` on a bare machine, with its data in tmp_path."""
    busy = [f"{port} ({name})" for port, name in PROCFILE_PORTS.items() if not port_is_free(port)]
    if busy:
        pytest.skip(
            f"port {', '.join(busy)} on 127.0.0.1 is taken and fixed in the Procfile; stop "
            "whatever listens there (a `make run`?) to run this test"
        )
    pg_port = free_port()
    redis_port = free_port()
    while redis_port == pg_port:
        redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in NOT_A_NEWCOMERS}
    env.update(
        JOBSITE_VAR_DIR=str(tmp_path / "var"),
        JOBSITE_PG_PORT=str(pg_port),
        JOBSITE_REDIS_PORT=str(redis_port),
    )
    launches: list[Launch] = []

    def launch(name: str) -> Launch:
        launches.append(Launch(env, tmp_path / f"{name}.log"))
        return launches[-1]

    yield {"env": env, "launch": launch, "pg_port": pg_port, "redis_port": redis_port}
    for started in launches:
        started.close()


def _superuser(pg_port: int, username: str) -> tuple:
    dsn = f"host=127.0.0.1 port={pg_port} user=postgres dbname=jobsite"
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT id, date_joined FROM auth_user WHERE username = %s AND is_superuser",
            [username],
        ).fetchone()


def _markers(setup: dict) -> list[str]:
    """Command-line fragments that only this launch's processes carry."""
    return [
        setup["env"]["JOBSITE_VAR_DIR"],
        f"127.0.0.1:{setup['redis_port']}",
        f"-p {setup['pg_port']}",
        "--bind 127.0.0.1:8000",
        "--port=5555",
    ]


def _assert_all_gone(run: Launch, children: dict[int, str], setup: dict, since: float) -> float:
    """Waits (up to STOP_TIMEOUT from `since`) until the launcher and every child are gone."""
    deadline = since + STOP_TIMEOUT
    left: dict[int, str] = {}
    while time.monotonic() < deadline:
        table = _process_table()
        left = {pid: args for pid, args in children.items() if pid in table}
        left |= {
            pid: args
            for pid, (_, args) in table.items()
            if any(marker in args for marker in _markers(setup))
        }
        if run.process.poll() is not None and not left:
            break
        time.sleep(0.1)
    assert run.process.poll() is not None, "the launcher still runs"
    assert left == {}, f"left running after {STOP_TIMEOUT} s: {left}"
    ports = [8000, 5555, setup["pg_port"], setup["redis_port"]]
    assert [port for port in ports if not port_is_free(port)] == []
    return time.monotonic() - since


def _expect_every_process(children: dict[int, str]) -> None:
    """The snapshot of children is what 'all gone' is checked against: it must be complete."""
    commands = " | ".join(children.values())
    needles = ["postgres", "redis-server", "honcho", "gunicorn jobsite.wsgi", "--queues default",
               "--queues long", "jobsite beat", "manage.py watchdog", "jobsite flower"]  # fmt: skip
    for needle in needles:
        assert needle in commands, f"{needle!r} not among the launcher's children: {commands}"
    assert "manage.py simulate" not in commands  # --no-demo: no simulated players either


def test_make_run_serves_then_stops_everything_and_finds_its_data_again(newcomer):
    # Given a machine with no servers configured: the first start initialises everything.
    first = newcomer["launch"]("first")
    cold_start = first.wait_for("admin login page (200)", lambda: http_status(ADMIN_LOGIN) == 200)
    first.wait_for("Flower asking for credentials (401)", lambda: http_status(FLOWER) == 401)
    creds = json.loads(Path(newcomer["env"]["JOBSITE_VAR_DIR"], "dev-credentials.json").read_text())
    auth = (creds["username"], creds["password"])
    assert f"login: {auth[0]} / {auth[1]}" in first.output()  # the printed login is this one
    assert http_status(FLOWER, auth) == 200
    assert http_status(FLOWER, (auth[0], "wrong")) == 401
    assert http_status(HEALTH) == 200
    superuser = _superuser(newcomer["pg_port"], auth[0])
    assert superuser is not None
    children = _descendants(first.process.pid)
    _expect_every_process(children)

    # When Ctrl-C reaches the launcher,
    stopping = time.monotonic()
    first.process.send_signal(signal.SIGINT)

    # then it and every process it started are gone within seconds, ports free.
    stop_time = _assert_all_gone(first, children, newcomer, stopping)
    assert "embedded servers stopped" in first.output()

    # Given the same data folder, a second start finds the data again (same superuser row),
    second = newcomer["launch"]("second")
    warm_start = second.wait_for("admin login page (200)", lambda: http_status(ADMIN_LOGIN) == 200)
    second.wait_for("Flower asking for credentials (401)", lambda: http_status(FLOWER) == 401)
    assert _superuser(newcomer["pg_port"], auth[0]) == superuser
    assert "created superuser" not in second.output()
    assert http_status(FLOWER, auth) == 200
    children = _descendants(second.process.pid)
    _expect_every_process(children)

    # and when the launcher is killed outright (no chance to clean up), its children follow it
    # (parent-death signals on the embedded servers and on honcho).
    killing = time.monotonic()
    second.process.kill()
    kill_time = _assert_all_gone(second, children, newcomer, killing)

    print(  # shown with -s or -rP: the figures the README quotes
        f"\nlauncher: cold start to admin page {cold_start:.1f} s, warm {warm_start:.1f} s; "
        f"Ctrl-C to all stopped {stop_time:.1f} s; SIGKILL to all stopped {kill_time:.1f} s"
    )
