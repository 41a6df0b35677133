"""Beat started while PostgreSQL is unreachable: it waits for the database instead of exiting.

celery beat builds its scheduler (which reads the schedule from the database) as it starts and
exits on any error there; `scheduler.schedulers.JobScheduler` waits with a capped backoff instead,
so beat started or restarted during a database outage fires as soon as the database is back.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection

from tests.chaos.harness import database_url, wait_for
from tests.chaos.test_beat import _next_boundary, _only_these_jobs, _sleep_until, _succeeded

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def test_beat_started_while_postgres_is_down_fires_once_it_is_back(
    cluster, chaos_ledger, chaos_jobs
):
    """10b: beat started while PostgreSQL is unreachable

    Expected: beat stays up, waiting for the database with a capped backoff instead of exiting;
    once PostgreSQL is back it fires the next slot on time (under 5 s late), once.
    """
    offsets = _only_these_jobs(("chaos-tick",))
    proxy = cluster.proxy(int(connection.settings_dict["PORT"]))
    proxy.down()
    worker = cluster.worker("w1", ready=False)  # the worker reaches PostgreSQL directly
    beat = cluster.beat("beat", DATABASE_URL=database_url(proxy.port))

    beat.wait_log("beat waits for PostgreSQL", timeout=60)
    time.sleep(4)  # several refused attempts
    assert beat.alive, beat.text()[-2000:]

    proxy.up()
    beat.wait_loaded(timeout=60)
    worker.wait_log(" ready.", timeout=60)
    boundary = _next_boundary()
    slot = boundary + timedelta(seconds=offsets["chaos-tick"])
    chaos_ledger.expect("chaos-tick", slot)
    _sleep_until(slot)
    run = wait_for(lambda: _succeeded("chaos-tick", slot), 60, "the slot to run")
    assert run.lateness_ms < 5000
    chaos_ledger.note(f"beat waited {beat.count('beat waits for PostgreSQL')} times; ran on time")
