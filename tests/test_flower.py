"""Flower: never open, and on the loopback interface unless deployed otherwise (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.embedded import free_port
from tests.http import http_status

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def flower(port: int, **env: str) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
    environment.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobsite", "flower", f"--port={port}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_flower_refuses_to_start_without_credentials():
    process = flower(free_port())
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0
    assert b"FLOWER_BASIC_AUTH" in output


def test_flower_asks_for_credentials_and_listens_on_loopback_only():
    port = free_port()
    process = flower(port, FLOWER_BASIC_AUTH="ops:s3cret-pass")
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while (status := http_status(url)) is None:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "flower did not answer within 60 s"
            time.sleep(0.5)

        assert status == 401
        assert http_status(url, ("ops", "wrong")) == 401
        assert http_status(url, ("ops", "s3cret-pass")) == 200
        # Flower 2.2 leaves these two open; flowerconfig.py closes them
        for path in ("metrics", "healthcheck"):
            assert http_status(url + path) == 401, path
            assert http_status(url + path, ("ops", "wrong")) == 401, path
            assert http_status(url + path, ("ops", "s3cret-pass")) == 200, path
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    finally:
        process.terminate()
        process.wait(20)
