"""The watchdog: the one process that looks at the platform from outside (`manage.py watchdog`).

Every WATCHDOG_INTERVAL seconds (30) one pass
1. looks for outages (monitoring.outages): beat's heartbeat older than HEALTH_BEAT_DOWN_AFTER, a
   broker that does not answer; one incident per outage, with the slots it cost counted into it; and
   (`workers`) a queue with work due that no worker consumes, one incident per queue;
2. runs the reconciler (scheduler.services.reconcile): lost runs, slots nobody ran, stale queues;
3. evaluates per-job alerts (monitoring.alerts) and delivers pending notifications, for at most
   DELIVERY_BUDGET seconds (a chat webhook that hangs during the very outage it reports must
   not hold the next pass for timeout x channels x incidents).

Beat only sends and stamps its heartbeat: a dead beat cannot report its own death, and a slow
database or webhook no longer delays its sends. Each pass first stamps the watchdog's own
heartbeat (scheduler.heartbeat): who watches the watchdog is the web process, which reads that
row's age for /healthz/watchdog, the admin header and `jobsite_watchdog_up`, on which Prometheus
pages (WatchdogDown) — a dead watchdog cannot report its own death either. The watchdog needs
only PostgreSQL (and the broker for the reconciler's re-sends); nothing it does waits on beat or
a worker.

Two watchdogs are harmless: every write of a pass is already guarded (the ledger's unique
(job, slot) rows, one open incident per (job, kind), conditional claims of deliveries). A pass
still takes a PostgreSQL advisory lock (core.advisory), because it costs one statement and
saves the second watchdog's work and noise: without it both would re-send the same newest
missed slot (the second message is recorded as a duplicate run) and log the same findings.
A second watchdog that finds the lock held skips that pass and tries again at its next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connection

from core.advisory import AdvisoryLock, advisory_lock_try
from scheduler.heartbeat import watchdog_heartbeat_stamp

logger = logging.getLogger(__name__)
DELIVERY_BUDGET = 20.0  # seconds of notification sending per pass; the rest waits for the next


@dataclass
class WatchdogPass:
    """What one pass did: each step's counts, or None when the step failed (logged)."""

    skipped: bool = False
    steps: dict[str, dict[str, int] | None] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def eventful(self) -> bool:
        return any(counts is None or any(counts.values()) for counts in self.steps.values())

    def describe(self) -> str:
        if self.skipped:
            return "another watchdog holds the pass lock; skipped"
        parts = []
        for name, counts in self.steps.items():
            if counts is None:
                parts.append(f"{name} failed")
            elif any(counts.values()):
                parts.append(f"{name} " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
        return f"{'; '.join(parts) or 'nothing to do'} ({self.seconds:.2f} s)"


def watchdog_pass(
    *,
    delivery_budget: float = DELIVERY_BUDGET,
    judge_beat: bool = True,
    judge_workers: bool = False,
) -> WatchdogPass:
    """One pass: outages, (workers,) reconcile, evaluate alerts, deliver. Never raises for a
    failed step: the step is logged and runs again at the next pass, and the steps after it
    still run. `judge_beat=False` leaves beat's liveness unjudged (see `manage.py watchdog`);
    `judge_workers=True` adds the `workers` step (no worker on a queue: a broadcast to the
    workers that costs ~1 s, which `manage.py watchdog` pays and a caller in a shell may not
    want to)."""
    from monitoring.alerts import alerts_deliver, alerts_evaluate
    from monitoring.outages import outages_evaluate, queue_workers_evaluate
    from scheduler.services.reconcile import ledger_reconcile

    started = time.monotonic()
    report = WatchdogPass()
    _replace_broken_connection()
    # Stamped first, lock or not: a second watchdog waiting for the lock is alive too; the web
    # process and Prometheus judge the watchdog by it (monitoring.liveness.watchdog_liveness).
    watchdog_heartbeat_stamp(force=True)
    try:
        with advisory_lock_try(AdvisoryLock.WATCHDOG_PASS) as taken:
            if not taken:
                report.skipped = True
                return report
            steps: list[tuple[str, Callable[[], dict[str, int]]]] = [
                ("outages", lambda: outages_evaluate(judge_beat=judge_beat)),
                *([("workers", queue_workers_evaluate)] if judge_workers else []),
                ("reconciler", ledger_reconcile),
                ("alerts", alerts_evaluate),
                ("deliveries", lambda: alerts_deliver(until=started + delivery_budget)),
            ]
            for name, step in steps:
                report.steps[name] = _step(name, step)
    except Exception:
        # The lock itself needs the database: with PostgreSQL down there is nothing to do.
        logger.exception("watchdog pass failed before its steps; trying again at the next pass")
        report.steps["lock"] = None
        _replace_broken_connection()
    report.seconds = time.monotonic() - started
    return report


def _step(name: str, step: Callable[[], Any]) -> dict[str, int] | None:
    try:
        return step()
    except Exception:
        logger.exception("watchdog: %s failed; it runs again at the next pass", name)
        _replace_broken_connection()
        return None


def _replace_broken_connection() -> None:
    """Close a connection a database outage broke, so that the next query opens a new one.

    Not inside a transaction (a test's): Django would close that connection for not being in
    autocommit mode, which is how it should be there."""
    if not connection.in_atomic_block:
        close_old_connections()
