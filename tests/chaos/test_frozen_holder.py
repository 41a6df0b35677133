"""Fault 7: a lock holder SIGSTOPped past its lease TTL, then resumed, must not move money.

Found by this suite: the money services did not call `scheduler.locks.fence_check()`, so a
settlement run resumed after its lease expired went on paying batch after batch, including items
that arrived after it lost the lease (55 of them in the first run of this test). Settlement now
checks the fence at the start of every batch transaction.
"""

from __future__ import annotations

import pytest
from django.utils import timezone

from referrals.models import SettlementItem
from scheduler.models import JobRun
from scheduler.services.reconcile import ledger_reconcile
from tests.chaos.harness import wait_for
from tests.chaos.seed import pending_items, seed_money, settled_items

Status = JobRun.Status
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]
SLOW_PAY = {
    "REFERRAL_PAYOUT_CHANNEL": "tests.chaos.jobs.SlowWalletPayout",
    "REFERRAL_SETTLEMENT_BATCH_SIZE": "50",
    "CHAOS_PAY_DELAY": "0.05",
}


def _items_paid_under(token: int, **filters: object) -> int:
    """Items whose payout reference names lease `token` (see jobs.SlowWalletPayout)."""
    return SettlementItem.objects.filter(
        settlement__payout_reference__endswith=f"|token={token}", **filters
    ).count()


def _finished(job: str, slot) -> bool:
    ledger_reconcile()
    rows = JobRun.objects.filter(job=job, slot=slot)
    return rows.filter(status=Status.SUCCEEDED).exists() and not rows.filter(
        status__in=(Status.QUEUED, Status.RUNNING)
    )


def test_frozen_lock_holder_cannot_pay_after_its_lease_expired(cluster, chaos_ledger, chaos_jobs):
    """7: lock holder SIGSTOPped past its TTL, then resumed

    Expected: the frozen run is recorded `lost` and a second attempt takes the lease and
    succeeds; resumed, the frozen holder finishes at most the batch it was in, pays nothing that
    arrived after its lease expired and cannot record success; every item paid once.
    """
    job = chaos_jobs["chaos-settlement"]
    batch = int(SLOW_PAY["REFERRAL_SETTLEMENT_BATCH_SIZE"])
    items = seed_money(tag="f7a", players=60, per_player=20, credits=30)
    holder = cluster.worker("holder", **SLOW_PAY)
    slot = timezone.now().replace(microsecond=0)
    chaos_ledger.expect(job.name, slot)
    cluster.send(job, slot)
    wait_for(lambda: settled_items() >= batch, 60, "a batch to commit", every=0.02)
    holder.freeze()
    first = JobRun.objects.get(job=job.name, slot=slot, attempt=1)
    paid_at_freeze = _items_paid_under(first.fence)

    # The lease expires (TTL 10 s, no heartbeat) and the reconciler marks the attempt lost and
    # sends attempt 2. Then new money arrives that only a lease holder may pay.
    wait_for(
        lambda: ledger_reconcile()["lost"] == 1, 30, "the frozen attempt to be lost", every=0.5
    )
    late = seed_money(tag="f7b", players=10, per_player=10, credits=5, first_day=1000)
    holder.thaw()  # the same worker then also receives attempt 2
    wait_for(lambda: _finished(job.name, slot), 60, "attempt 2 to succeed", every=0.5)

    rows = JobRun.objects.filter(job=job.name, slot=slot).order_by("attempt", "id")
    owners = [(r.attempt, r.status) for r in rows if not r.duplicate_of_id]
    assert owners == [(1, Status.LOST), (2, Status.SUCCEEDED)], owners
    after_freeze = _items_paid_under(first.fence) - paid_at_freeze
    late_by_stale = _items_paid_under(first.fence, settlement__player__handle__startswith="f7b-")
    chaos_ledger.note(
        f"on resume the stale holder committed the batch it was frozen in ({after_freeze} "
        f"items, fenced at its start) and paid 0 of the {late} items that arrived later"
        if late_by_stale == 0
        else f"stale holder paid {late_by_stale} late items without its lease"
    )
    # At most the batch it was frozen in: fenced when it began, and the lease row stays locked
    # until it ends, so nobody else held the lease meanwhile. Nothing that arrived later.
    assert late_by_stale == 0
    assert after_freeze <= 2 * batch  # one batch: up to `batch` rewards and `batch` credits
    assert pending_items() == 0
    assert settled_items() == items + late
