"""Chaos suite fixtures: its jobs, a cluster of real processes, the check after each test.

Teardown order matters and is fixed by the dependencies: the cluster's processes stop first
(`cluster` depends on `chaos_ledger`), then the invariants are checked and reported, then
pytest-django flushes the database (`chaos_ledger` depends on `transactional_db`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from scheduler import registry, tasks
from scheduler.registry import Job
from tests.chaos.harness import Cluster
from tests.chaos.invariants import ReportRow, ledger_accounting, money_problems, report_append
from tests.chaos.jobs import CHAOS_JOBS


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call":
        item.chaos_call_report = report  # type: ignore[attr-defined]
    return report


@pytest.fixture
def chaos_jobs() -> Iterator[dict[str, Job]]:
    """The chaos jobs, registered in this process for one test (workers import them via env)."""
    for job in CHAOS_JOBS:
        registry.register(job)
    tasks.register_job_tasks()
    yield {job.name: job for job in CHAOS_JOBS}
    for job in CHAOS_JOBS:
        registry.unregister(job.name)


@dataclass
class ChaosLedger:
    """What the test declares about itself for the check and the report."""

    fault: str
    expected: set[tuple[str, datetime]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def expect(self, job: str, *slots: datetime) -> None:
        self.expected.update((job, slot) for slot in slots)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _close_other_connections() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def chaos_ledger(
    request: pytest.FixtureRequest, transactional_db: None, chaos_jobs: dict[str, Job]
) -> Iterator[ChaosLedger]:
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    ledger = ChaosLedger(fault=doc)
    started = time.monotonic()
    yield ledger
    _close_other_connections()
    connection.close()  # a fault may have broken this process's connection too
    accounting = ledger_accounting(ledger.expected)
    money = money_problems()
    call = getattr(request.node, "chaos_call_report", None)
    passed = call is not None and call.passed and not accounting.problems and not money
    known = call is not None and hasattr(call, "wasxfail") and not accounting.problems and not money
    report_append(
        ReportRow(
            fault=ledger.fault,
            test=request.node.name,
            outcome="pass" if passed else "known issue" if known else "FAIL",
            seconds=round(time.monotonic() - started, 1),
            runs=accounting.executions,
            slots_expected=accounting.expected,
            slots_accounted=accounting.accounted,
            duplicates_prevented=accounting.duplicates_prevented,
            money="ok" if not money else "; ".join(money)[:300],
            notes="; ".join(ledger.notes),
        )
    )
    problems = accounting.problems + money
    if problems:
        pytest.fail("invariants broken after the test:\n  " + "\n  ".join(problems))


@pytest.fixture
def cluster(chaos_ledger: ChaosLedger, tmp_path: Path, settings: Any) -> Iterator[Cluster]:
    """A Redis of this test's own; start workers and beats on it with `cluster.worker()` etc."""
    running = Cluster(tmp_path)
    # The reconciler this process runs uses the cluster's grace too.
    grace = int(running.env["JOB_RECONCILE_GRACE"])
    settings.SCHEDULER = replace(settings.SCHEDULER, reconcile_grace_seconds=grace)
    try:
        yield running
    finally:
        running.close()
        _close_other_connections()
