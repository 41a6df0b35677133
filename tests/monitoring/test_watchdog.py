"""The watchdog (monitoring.watchdog, `manage.py watchdog`): the one place the reconciler and
alerts run.

Real PostgreSQL and Redis; the command runs as a real process where its loop and signals are
what is tested.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from core.advisory import AdvisoryLock
from monitoring.watchdog import watchdog_pass
from scheduler.heartbeat import beat_heartbeat_stamp
from scheduler.schedulers import JobScheduler

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _other_session() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"], port=s["PORT"], user=s["USER"], password=s["PASSWORD"] or None,
        dbname=s["NAME"], autocommit=True,
    )  # fmt: skip


def test_a_pass_reconciles_then_evaluates_and_delivers():
    beat_heartbeat_stamp(force=True)
    report = watchdog_pass()
    assert not report.skipped
    assert list(report.steps) == ["outages", "reconciler", "alerts", "deliveries"]
    assert all(counts is not None for counts in report.steps.values())
    # calling it twice changes nothing
    assert not watchdog_pass().eventful


def test_a_second_watchdog_skips_the_pass_the_first_holds():
    # given another watchdog in the middle of its pass (it holds the pass lock)
    with _other_session() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [int(AdvisoryLock.WATCHDOG_PASS)])
        # when this one's pass comes
        report = watchdog_pass()
        # then it does nothing and says so
        assert report.skipped
        assert report.describe() == "another watchdog holds the pass lock; skipped"
        # and once the other is done the next pass runs
        other.execute("SELECT pg_advisory_unlock(%s)", [int(AdvisoryLock.WATCHDOG_PASS)])
        assert not watchdog_pass().skipped


def test_beat_no_longer_reconciles_or_alerts():
    # The scheduler has no reconciler timer and no delivery thread any more: beat only sends.
    assert not hasattr(JobScheduler, "_last_reconcile")
    import scheduler.schedulers as schedulers

    assert not hasattr(schedulers, "reconcile_safely")


@pytest.mark.process
def test_help_names_the_options():
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "watchdog", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--once" in result.stdout
    assert "--interval" in result.stdout


@pytest.mark.parametrize("value", ["0", "-5", "abc", "3601"])
def test_a_bad_interval_is_refused_by_name(value):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--interval"):
        call_command("watchdog", "--interval", value)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_watchdog_runs_passes_until_sigterm(tmp_path):
    from tests.scheduler.conftest import close_other_connections
    from tests.scheduler.processes import manage_process

    log = tmp_path / "watchdog.log"
    with manage_process(["watchdog", "--interval", "1"], log, LOG_LEVEL="DEBUG") as process:
        deadline = time.monotonic() + 60
        while log.read_text().count("watchdog pass:") < 2:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    close_other_connections()
    text = log.read_text()
    assert "watchdog started" in text
    assert "SIGTERM received" in text or "Terminated received" in text
    assert text.rstrip().endswith("watchdog stopped"), text[-2000:]
