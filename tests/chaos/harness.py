"""Real processes and the faults done to them: celery worker / beat subprocesses on a Redis of the
test's own, signals, broker and database outages, and a TCP proxy that cuts or slows connections.

Every process gets PGAPPNAME=chaos-<name>, so a test finds its PostgreSQL backends by name.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import kombu.pools
from django.db import connection

from devtools.embedded import EmbeddedRedis, free_port
from jobsite.celery import app
from scheduler.registry import Job
from tests.scheduler.beat_slots import schedule_slot

ROOT = Path(__file__).resolve().parents[2]
JOB_MODULES = "tests.scheduler.registered_sample_jobs,tests.chaos.registered_jobs"
# What beat logs once it has read its schedule (scheduler.schedulers.log_stagger): the last line.
BEAT_LOADED = ("no two jobs start in the same second", "collision at offset")


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def database_url(port: int | None = None) -> str:
    """The test database as a URL, optionally through a proxy listening on `port`."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST']}:{port or s['PORT']}/{s['NAME']}"


def backends(application: str, *, query_like: str = "%") -> list[int]:
    """Pids of the test database's backends whose application_name starts with `application`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE %s AND query LIKE %s AND pid <> pg_backend_pid()",
            [application + "%", query_like],
        )
        return [row[0] for row in cursor.fetchall()]


def terminate_backends(application: str, *, query_like: str = "%") -> int:
    """pg_terminate_backend for each matching backend; returns how many were terminated."""
    pids = backends(application, query_like=query_like)
    with connection.cursor() as cursor:
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    return len(pids)


class Proc:
    """One `celery` (or, with `manage`, `manage.py`) subprocess, with the signals a test does
    to it."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path, *, manage: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self._out = log.open("ab")
        program = [str(ROOT / "manage.py")] if manage else ["-m", "celery", "-A", "jobsite"]
        self.popen = subprocess.Popen(
            [sys.executable, *program, *argv],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self.stopped = False

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60, *, count: int = 1) -> None:
        def seen() -> bool:
            assert self.alive, f"{self.name} exited:\n{self.text()[-3000:]}"
            return self.text().count(needle) >= count

        wait_for(seen, timeout, f"{needle!r} x{count} in {self.name}'s log")

    def wait_loaded(self, timeout: float = 60) -> None:
        """Beat only: wait until it has loaded its schedule (its first tick follows at once).

        A beat takes 2-3 s to start on a quiet machine and 8-15 s on a loaded one: a test that
        picks a minute boundary before this point may find beat starting after it."""

        def loaded() -> bool:
            assert self.alive, f"{self.name} exited:\n{self.text()[-3000:]}"
            return any(line in self.text() for line in BEAT_LOADED)

        wait_for(loaded, timeout, f"{self.name} to load its schedule")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no ack, no restore of held messages."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: every thread stops, the heartbeat too; sockets stay open."""
        self.popen.send_signal(signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        self.popen.send_signal(signal.SIGCONT)
        self.stopped = False

    def term(self, timeout: float = 30) -> int | None:
        """SIGTERM (a deploy): warm shutdown, running tasks finish, held messages go back."""
        if self.stopped:
            self.thaw()
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._out.close()
        return self.popen.returncode


class TcpProxy:
    """127.0.0.1:`port` -> `target`: `cut()` drops every open connection, `down()` refuses new ones
    until `up()`, `delay` seconds are added before each forwarded chunk (a slow network)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = 0.0
        self.accepting = True
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="chaos-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.accepting:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                if pair not in self._pairs:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.delay:
                        time.sleep(self.delay)
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            self._drop(pair)

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def connections(self) -> int:
        return len(self._pairs)

    def cut(self) -> int:
        """Drop every open connection (both ends see a reset/EOF); returns how many."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def down(self) -> None:
        self.accepting = False
        self.cut()

    def up(self) -> None:
        self.accepting = True

    def close(self) -> None:
        self._closed = True
        self.down()
        self._server.close()


@contextlib.contextmanager
def app_broker(url: str) -> Iterator[None]:
    """Point this process's Celery app (job_dispatch, the reconciler's re-sends) at `url`."""

    def reset() -> None:
        # app._pool is kombu's process-wide pool for the broker URL (kombu.pools.connections):
        # closing it and leaving it registered made every later send in this pytest process
        # fail with "Acquire on closed pool". kombu.pools.reset() closes and forgets them all.
        kombu.pools.reset()
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    keys = ("broker_url", "broker_write_url", "broker_read_url")  # Celery fills in all three
    saved = {key: app.conf[key] for key in keys}
    reset()
    app.conf.update(dict.fromkeys(keys, url))
    try:
        yield
    finally:
        reset()
        app.conf.update(saved)


class Cluster:
    """A Redis of the test's own and the celery processes started on it; `close()` ends them."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.redis = EmbeddedRedis(tmp / "redis" / "data", free_port(), persistent=False).start()
        self.env = {
            "DATABASE_URL": database_url(),
            "REDIS_URL": self.redis.url,
            "JOBSITE_JOB_MODULES": JOB_MODULES,
            # Long enough for every countdown the suite sends, short enough to see a redelivery.
            "CELERY_VISIBILITY_TIMEOUT": "60",
            "CELERY_BEAT_MAX_LOOP_INTERVAL": "1",
            "JOB_RECONCILE_GRACE": "5",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.procs: list[Proc] = []
        self.proxies: list[TcpProxy] = []
        self._broker = app_broker(self.redis.url)
        self._broker.__enter__()

    def _environment(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        env = {**os.environ, **self.env, "PGAPPNAME": f"chaos-{name}", **extra}
        for key in ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER"):
            env.pop(key, None)
        return env

    def worker(
        self, name: str = "w1", *, ready: bool = True, concurrency: int = 4, **env: str
    ) -> Proc:
        argv = [
            "worker",
            "--queues",
            "default,long",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@chaos",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
        proc = Proc(name, argv, self._environment(name, env), self.tmp / f"{name}.log")
        self.procs.append(proc)
        if ready:
            proc.wait_log(" ready.", timeout=60)
        return proc

    def beat(self, name: str = "beat", **env: str) -> Proc:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        argv = [
            "beat",
            "--loglevel",
            "INFO",
            "--pidfile",
            str(folder / "beat.pid"),
            "--schedule",
            str(folder / "beat-schedule"),
        ]
        proc = Proc(name, argv, self._environment(name, env), self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def watchdog(self, name: str = "watchdog", *, interval: float = 5, **env: str) -> Proc:
        """`manage.py watchdog`: the reconciler and alerts, every `interval` seconds (30 in
        production; shorter here so a test waits less for what a pass does)."""
        argv = ["watchdog", "--interval", str(interval)]
        proc = Proc(name, argv, self._environment(name, env), self.tmp / f"{name}.log", manage=True)
        self.procs.append(proc)
        proc.wait_log("watchdog started", timeout=60)
        return proc

    def send(
        self,
        job: Job,
        slot: datetime,
        *,
        trigger: str = "beat",
        countdown: float | None = None,
        task_id: str | None = None,
        **kwargs: Any,
    ) -> str:
        """What beat sends for `slot` (or, with run_id/attempt in kwargs, a re-send).

        A `beat` message runs only for a fire time of the job's schedule: `slot` is made one."""
        if trigger == "beat":
            schedule_slot(job, slot)
        result = app.send_task(
            job.task,
            kwargs={"slot": slot.isoformat(), "trigger": trigger, **kwargs},
            countdown=countdown,
            task_id=task_id,
            queue=job.queue,
            headers={"job": job.name, "slot": slot.isoformat()},
        )
        return result.id

    def restore_unacked(self, visibility_timeout: float) -> None:
        """Move messages unacknowledged for longer than `visibility_timeout` back to their queue.

        This is what every worker's kombu does, but only at consumer start and every 10th
        10-second poll (kombu.transport.redis `restore_visible(interval=10)`): a dead worker's
        message waits up to ~100 s beyond the visibility timeout. Tests do it on demand.
        """
        options = {"visibility_timeout": visibility_timeout}
        with app.connection_for_write(transport_options=options) as conn:
            conn.default_channel.qos.restore_visible(num=1000)

    def unacked(self) -> int:
        """Messages delivered to a worker and not acknowledged yet (held or running)."""
        with app.connection_for_write() as conn:
            return int(conn.default_channel.client.hlen("unacked"))

    def proxy(self, target_port: int) -> TcpProxy:
        proxy = TcpProxy(target_port)
        self.proxies.append(proxy)
        return proxy

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        wait_for(lambda: _port_free(self.redis.port), 10, "Redis's port to be released")
        self.redis.start()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.term(timeout=20)
        for proc in self.procs:  # pytest shows this only when the test fails
            print(f"----- {proc.name} (exit {proc.popen.returncode}) -----\n{proc.text()[-4000:]}")
        for proxy in self.proxies:
            proxy.close()
        self.redis.stop()
        self._broker.__exit__(None, None, None)


def _port_free(port: int) -> bool:
    from devtools.embedded import port_is_free

    return port_is_free(port)
