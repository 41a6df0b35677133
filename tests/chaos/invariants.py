"""The check run after every chaos test, and the row it adds to the report.

- Money: the referrals ledger balances (the referrals suite's own assertion), and no prize credit,
  referral reward or settlement item exists twice.
- Ledger of runs: every (job, slot) that has rows, and every slot the test declared expected, has
  exactly one terminal outcome: its attempts run 1..n, every attempt but the newest was superseded
  (`lost` or `retrying`, with its successor), the newest is terminal (a `lost` newest is accepted:
  recorded, not silently gone), at most one attempt succeeded, and every duplicate points at an
  owner row of the same slot.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime

from django.db import connection

from scheduler.models import JobRun
from tests.chaos.report import REPORT
from tests.referrals.conftest import assert_ledger_consistent

Status = JobRun.Status
NOT_ADMITTED = JobRun.NOT_ADMITTED
OPEN = {Status.QUEUED, Status.RUNNING}
SUPERSEDED = {Status.LOST, Status.RETRYING}
NOT_EXECUTED = {
    Status.DUPLICATE,
    Status.SKIPPED_LOCK,
    Status.EXPIRED,
    Status.MISSED,
    Status.REFUSED,
    Status.SKIPPED_DISABLED,
    Status.SUPERSEDED,
}

_DOUBLES = {
    "prize credit twice for a pool": (
        "SELECT pool_id FROM games_prizecredit GROUP BY pool_id HAVING count(*) > 1"
    ),
    "reward twice for a session and tier": (
        "SELECT session_id, tier FROM referrals_referralreward "
        "GROUP BY session_id, tier HAVING count(*) > 1"
    ),
    "reward settled twice": (
        "SELECT reward_id FROM referrals_settlementitem WHERE reward_id IS NOT NULL "
        "GROUP BY reward_id HAVING count(*) > 1"
    ),
    "prize credit settled twice": (
        "SELECT prize_credit_id FROM referrals_settlementitem WHERE prize_credit_id IS NOT NULL "
        "GROUP BY prize_credit_id HAVING count(*) > 1"
    ),
}


def money_problems() -> list[str]:
    problems = []
    with connection.cursor() as cursor:
        for name, sql in _DOUBLES.items():
            cursor.execute(sql)
            rows = cursor.fetchall()
            if rows:
                problems.append(f"{name}: {rows[:5]}")
    try:
        assert_ledger_consistent()
    except AssertionError as exc:
        problems.append(f"ledger: {exc}")
    return problems


@dataclass
class Accounting:
    rows: int = 0
    executions: int = 0  # attempts that started (the service ran, or began to)
    slots_seen: int = 0
    expected: int = 0
    accounted: int = 0
    duplicates_prevented: int = 0  # deliveries recorded as duplicate or skipped_lock
    problems: list[str] = field(default_factory=list)


def _slot_problems(key: tuple[str, datetime], rows: list[JobRun]) -> list[str]:
    name = f"{key[0]} @ {key[1]:%H:%M:%S}"
    # The suite sends only what beat or the dispatch path would: a refused message is a fault.
    problems = [f"{name}: {r.error}" for r in rows if r.status == Status.REFUSED]
    owners = sorted(
        (r for r in rows if r.duplicate_of_id is None and r.status not in NOT_ADMITTED),
        key=lambda r: r.attempt,
    )
    if not owners:
        return [*problems, f"{name}: only duplicates, no owner row"]
    attempts = [r.attempt for r in owners]
    if attempts != list(range(1, len(owners) + 1)):
        problems.append(f"{name}: attempts {attempts} are not 1..n")
    for run in owners[:-1]:
        if run.status not in SUPERSEDED:
            problems.append(f"{name}: attempt {run.attempt} is {run.status} but has a successor")
    newest = owners[-1]
    if newest.status in OPEN:
        problems.append(f"{name}: newest attempt {newest.attempt} is still {newest.status}")
    if newest.status == Status.RETRYING:
        problems.append(f"{name}: attempt {newest.attempt} is retrying but no retry ran")
    if sum(r.status == Status.SUCCEEDED for r in owners) > 1:
        problems.append(f"{name}: succeeded more than once")
    ids = {r.pk for r in rows}
    for dup in rows:
        if dup.duplicate_of_id is not None and dup.duplicate_of_id not in ids:
            problems.append(f"{name}: duplicate {dup.pk} points outside its slot")
    return problems


def ledger_accounting(expected: set[tuple[str, datetime]]) -> Accounting:
    """Account for every slot in the ledger (the database holds this test's rows only)."""
    by_slot: dict[tuple[str, datetime], list[JobRun]] = defaultdict(list)
    for run in JobRun.objects.all():
        by_slot[(run.job, run.slot)].append(run)
    acc = Accounting(expected=len(expected) if expected else len(by_slot))
    acc.slots_seen = len(by_slot)
    for key, rows in sorted(by_slot.items()):
        acc.rows += len(rows)
        acc.executions += sum(r.status not in NOT_EXECUTED for r in rows)
        acc.duplicates_prevented += sum(
            r.status in {Status.DUPLICATE, Status.SKIPPED_LOCK} for r in rows
        )
        slot_problems = _slot_problems(key, rows)
        acc.problems += slot_problems
        if not slot_problems and (not expected or key in expected):
            acc.accounted += 1
    for key in sorted(expected - set(by_slot)):
        acc.problems.append(f"{key[0]} @ {key[1]:%H:%M:%S}: expected, no ledger row")
    return acc


@dataclass
class ReportRow:
    fault: str
    test: str
    outcome: str
    seconds: float
    runs: int
    slots_expected: int
    slots_accounted: int
    duplicates_prevented: int
    money: str
    notes: str = ""


def report_append(row: ReportRow) -> None:
    """Only under `make chaos` (CHAOS_REPORT set): `make test` runs elsewhere must not mix in."""
    if not os.environ.get("CHAOS_REPORT"):
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps(asdict(row)) + "\n")
