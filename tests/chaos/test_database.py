"""PostgreSQL going away under beat and workers: every connection of theirs runs through a TCP
proxy that the test takes down (all connections reset, new ones refused) and brings back, which is
what a PostgreSQL restart or failover looks like from the clients."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.utils import timezone

from scheduler.models import JobRun
from scheduler.services.reconcile import ledger_reconcile
from tests.chaos.harness import backends, database_url, wait_for
from tests.chaos.seed import pending_items, seed_money

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]


def _owners(job: str, slot) -> list[tuple[int, str]]:
    rows = JobRun.objects.filter(job=job, slot=slot, duplicate_of__isnull=True)
    return list(rows.order_by("attempt").values_list("attempt", "status"))


@pytest.mark.parametrize("outage", [3])
def test_postgres_restarted_under_beat_and_workers(cluster, chaos_ledger, chaos_jobs, outage):
    """10: PostgreSQL restarted under beat and workers

    Expected: beat and the worker survive; the lost attempt is re-sent and the slot ends
    `succeeded` within three attempts, every item paid once (a slot that ends `failed` is
    reported as a known issue).
    """
    job = chaos_jobs["chaos-db-settlement"]
    items = seed_money(tag="f10", players=20, per_player=10, credits=10)
    proxy = cluster.proxy(int(connection.settings_dict["PORT"]))
    cluster.env["DATABASE_URL"] = database_url(proxy.port)
    worker = cluster.worker("w1", CHAOS_DB_SLEEP="2")
    beat = cluster.beat("beat")
    # Past its start: this test is about an outage under a running beat (one that starts during
    # an outage waits for PostgreSQL: test_beat_start.py).
    beat.wait_log("no two jobs start in the same second", timeout=30)
    slot = timezone.now().replace(microsecond=0)
    chaos_ledger.expect(job.name, slot)
    cluster.send(job, slot)
    wait_for(lambda: backends("chaos-w1", query_like="%pg_sleep%"), 30, "the job in PostgreSQL")

    proxy.down()  # every client connection reset, new ones refused: PostgreSQL is "restarting"
    time.sleep(outage)
    proxy.up()

    def settled() -> bool:
        ledger_reconcile()
        owners = _owners(job.name, slot)
        return owners and owners[-1][1] not in (Status.QUEUED, Status.RUNNING, Status.RETRYING)

    wait_for(settled, 60, "the interrupted run to complete", every=0.5)
    owners = _owners(job.name, slot)
    assert len(owners) <= 3, owners  # the first attempt's retries, no more
    assert worker.alive
    assert beat.alive
    chaos_ledger.note(f"{items} items; attempts {owners}")
    if owners[-1][1] != Status.SUCCEEDED:
        # Seen about once in eight runs: the interrupted attempt's own bookkeeping fails (the
        # database is still down when `_failed` records `retrying`), the reconciler marks it lost
        # and its re-send ends `failed`. Accounted for and paid at most once (checked after the
        # test), but the slot does not complete: a known issue, reported, not hidden.
        errors = JobRun.objects.filter(job=job.name, slot=slot).values_list("attempt", "error")
        chaos_ledger.note(f"KNOWN ISSUE: slot ended {owners[-1][1]}: {list(errors)}"[:400])
        pytest.xfail("a run interrupted by a PostgreSQL outage can end failed (see the report)")
    assert pending_items() == 0
