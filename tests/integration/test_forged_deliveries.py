"""Forged job messages on a real worker, broker and Flower: refused, recorded, no money moved.

The job is the real prize-pool finalisation on seeded pools: a pool whose day ended (due at the
next 00:00:50), today's pool and this week's pool. Whatever a message says, only the run beat or
the dispatch path would start may finalise anything.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from devtools.embedded import free_port
from games.models import LeaderboardEntry, PrizeCredit, PrizePool
from games.services import player_create
from jobsite.celery import app
from scheduler.audit import Actor
from scheduler.models import JobRun, JobSchedule
from scheduler.registry import get_job
from scheduler.services.dispatch import job_trigger
from scheduler.services.writes import schedules_apply
from tests.http import http_status
from tests.integration.conftest import running_worker
from tests.scheduler import processes

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
TASK = "games.prize_pool_finalise"
FLOWER_AUTH = ("ops", "s3cret-pass")


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def _midnight_slot(day: date) -> datetime:
    """prize-pool-finalisation's real slot on `day`: 00:00 plus its offset of 50 s."""
    return datetime(day.year, day.month, day.day, 0, 0, 50, tzinfo=UTC)


@pytest.fixture
def pools() -> dict[str, PrizePool]:
    schedules_apply(actor=Actor.system("tests"), profile="production")  # 0 0 * * *, offset 50
    # Tracked since long before: a message for a moment that is no fire time is then a forgery
    # (`refused`), not one overtaken by a change made while it waited (`superseded`).
    JobSchedule.objects.update(tracked_since=timezone.now() - timedelta(days=2))
    today = timezone.now().date()
    yesterday = today - timedelta(days=1)
    winner = player_create(handle="winner")
    LeaderboardEntry.objects.create(
        player=winner,
        game="snake",
        period="daily",
        period_start=yesterday,
        score=90,
        achieved_at=_midnight_slot(yesterday) + timedelta(hours=9),
    )

    def pool(period: str, start: date) -> PrizePool:
        return PrizePool.objects.create(
            game="snake", period=period, period_start=start, amount=Decimal("12.50")
        )

    return {
        "ended": pool("daily", yesterday),
        "today": pool("daily", today),
        "week": pool("weekly", today - timedelta(days=today.weekday())),
    }


def _money() -> list[tuple]:
    pools = PrizePool.objects.order_by("pk").values_list("pk", "status", "amount", "winner_id")
    return [*pools, ("credits", PrizeCredit.objects.count())]


def _refused(task_id: str) -> JobRun:
    _wait_for(lambda: JobRun.objects.filter(task_id=task_id).exists(), f"a row for {task_id}")
    return JobRun.objects.get(task_id=task_id)


def test_forged_messages_are_refused_recorded_and_move_no_money(pools):
    # given a worker, and money the job would move if it ran now
    now = timezone.now()
    next_monday = now.date() + timedelta(days=7 - now.weekday())
    not_a_fire_time = now.replace(microsecond=0) - timedelta(seconds=3)
    if not_a_fire_time.time().isoformat() == "00:00:50":
        not_a_fire_time -= timedelta(seconds=1)
    forged = {
        # a raw broker message: a manual run "next Monday" (would close this week's pool too)
        "manual next Monday": (
            {"slot": _midnight_slot(next_monday).isoformat(), "trigger": "manual"},
            "lies in the future",
        ),
        # beat's trigger, for a moment that is no fire time of the job (would close yesterday's)
        "beat, not a fire time": (
            {"slot": not_a_fire_time.isoformat(), "trigger": "beat"},
            "is not a fire time plus offset",
        ),
        # beat's trigger, for the real slot of tomorrow (would close today's pool now)
        "beat, tomorrow's slot": (
            {"slot": _midnight_slot(now.date() + timedelta(days=1)).isoformat(), "trigger": "beat"},
            "lies in the future",
        ),
        # an API run nobody dispatched (no queued ledger row for it)
        "api, never dispatched": (
            {"slot": now.replace(microsecond=0).isoformat(), "trigger": "api", "run_id": 1},
            "no ledger row",
        ),
    }
    before = _money()

    with running_worker():
        # when each is sent straight to the broker
        sent = {name: app.send_task(TASK, kwargs=kwargs).id for name, (kwargs, _) in forged.items()}
        rows = {name: _refused(task_id) for name, task_id in sent.items()}
        # then each is refused with its reason, and nothing was paid or closed
        for name, (_, reason) in forged.items():
            assert rows[name].status == JobRun.Status.REFUSED, (name, rows[name].error)
            assert reason in rows[name].error, name
        assert _money() == before
        assert not JobRun.objects.exclude(status=JobRun.Status.REFUSED).exists()

        # and the real path still works: a run dispatched through the ledger closes what is due
        run = job_trigger(job=get_job("prize-pool-finalisation"), trigger="api", reason="test")
        _wait_for(lambda: JobRun.objects.get(pk=run.pk).status == "succeeded", "the real run")

    statuses = {name: PrizePool.objects.get(pk=p.pk).status for name, p in pools.items()}
    assert statuses == {"ended": "finalised", "today": "open", "week": "open"}
    assert PrizeCredit.objects.get().amount == Decimal("12.50")


def _flower(port: int) -> subprocess.Popen[bytes]:
    # Flower's send-task stores the task's pending result: it needs the test database.
    environment = processes.test_environment()
    environment = {k: v for k, v in environment.items() if not k.startswith("FLOWER_")}
    environment["FLOWER_BASIC_AUTH"] = ":".join(FLOWER_AUTH)
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobsite", "flower", f"--port={port}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _flower_send_task(port: int, task: str, kwargs: dict[str, object]) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/task/send-task/{task}",
        data=json.dumps({"kwargs": kwargs}).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(":".join(FLOWER_AUTH).encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["task-id"]


def test_flowers_send_task_api_cannot_move_money(pools):
    port = free_port()
    process = _flower(port)
    before = _money()
    try:
        _wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") == 401, "Flower", 60)
        with running_worker():
            # when a Flower login sends the job a future slot as a manual run
            next_week = _midnight_slot(timezone.now().date() + timedelta(days=7))
            task_id = _flower_send_task(
                port, TASK, {"slot": next_week.isoformat(), "trigger": "manual", "user_id": 1}
            )
            row = _refused(task_id)
    finally:
        process.terminate()
        process.wait(20)

    # then the worker refused it, said why in the ledger, and no pool or credit changed
    assert row.status == JobRun.Status.REFUSED
    assert "lies in the future" in row.error
    assert row.user_id is None  # what the message claimed is quoted, not believed
    assert _money() == before
