"""Celery's own command line works against the project: `celery -A jobsite call`, `inspect`,
`status` and `events`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django_celery_results.models import TaskResult

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def celery(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "jobsite", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
        check=False,
    )


def test_celery_call_sends_a_task_that_a_worker_runs(celery_worker_thread):
    # Given a running worker; when an operator sends a task with Celery's CLI
    sent = celery("call", "scheduler.ping")

    # then the CLI prints the task id (it used to die with AppRegistryNotReady) and it runs
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 30
    while not TaskResult.objects.filter(task_id=task_id).exists():
        assert time.monotonic() < deadline, "the worker never stored the CLI's task"
        time.sleep(0.2)
    assert TaskResult.objects.get(task_id=task_id).status == "SUCCESS"


def test_celery_inspect_answers_without_a_traceback():
    # No worker runs here: `inspect ping` says so in Celery's own words, it does not crash.
    answer = celery("inspect", "ping", "--timeout", "1")
    assert "Traceback" not in answer.stderr, answer.stderr
    assert "No nodes replied" in answer.stdout + answer.stderr


def test_celery_status_answers_without_a_traceback():
    # No worker runs here: `status` says so in Celery's own words (exit 69), it does not crash.
    answer = celery("status", "--timeout", "1")
    assert "Traceback" not in answer.stderr, answer.stderr
    assert "No nodes replied" in answer.stdout + answer.stderr


def test_celery_events_dump_connects_to_the_broker():
    # `events` runs until stopped: it must start its capture, then stop cleanly on SIGTERM.
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobsite", "events", "--dump"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 30
        output = ""
        while "starting capture" not in output:
            assert time.monotonic() < deadline, output
            line = proc.stdout.readline()
            assert line or proc.poll() is None, output
            output += line
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=20)[0]
    assert "Traceback" not in output + rest, output + rest
