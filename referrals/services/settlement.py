"""Settlement: pay pending referral rewards and prize credits into the ledger, each exactly once.

A run works in batches; each batch is ONE database transaction that

1. claims up to REFERRAL_SETTLEMENT_BATCH_SIZE pending rewards and as many unpaid prize credits
   with SELECT ... FOR NO KEY UPDATE SKIP LOCKED, skipping players on hold or in payout backoff
   (concurrent settlers take disjoint rows and never wait on each other);
2. drops claimed credits that a concurrent settler linked after this statement's snapshot was
   taken (a credit row is never updated, so the lock alone does not re-check it; a fresh statement
   under READ COMMITTED sees that settler's committed link);
3. per player: asks the payout channel to pay the total; a channel error becomes a `failed`
   Settlement with the error, whose items stay pending, and a backoff for that player;
4. for paid players: Settlement rows, one SettlementItem per item (a unique link per reward and per
   credit: an item can never be paid twice), one balanced ledger transaction per settlement,
   rewards marked settled, a notification queued.

So a worker SIGKILLed mid-batch loses its open transaction and nothing else: no item of that batch
is linked, so the next run pays them, once. Items settled by earlier batches stay settled.
Cost of one batch of 5,000 items (the default), in-database channel: ~0.25 s, a few MB.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from games.models import Notification, Player
from games.money import ZERO
from referrals import conf
from referrals.models import (
    Account,
    LedgerEntry,
    LedgerTransaction,
    Settlement,
    SettlementStatus,
)
from referrals.payouts import Payout, PayoutChannel, payout_channel, payout_key
from scheduler.locks import fence_check

# Both claims skip players on hold and players whose last payout failed until their backoff ends.
_CLAIM_REWARDS = """
SELECT r.id, r.beneficiary_id, r.amount
FROM referrals_referralreward r
WHERE r.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM referrals_payouthold h
                  WHERE h.player_id = r.beneficiary_id AND h.released_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                  WHERE b.player_id = r.beneficiary_id AND b.next_attempt_at > %(now)s)
ORDER BY r.beneficiary_id, r.id
LIMIT %(limit)s
FOR NO KEY UPDATE OF r SKIP LOCKED
"""

_CLAIM_CREDITS = """
SELECT c.id, c.player_id, c.amount
FROM games_prizecredit c
WHERE NOT EXISTS (SELECT 1 FROM referrals_settlementitem i WHERE i.prize_credit_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM referrals_payouthold h
                  WHERE h.player_id = c.player_id AND h.released_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                  WHERE b.player_id = c.player_id AND b.next_attempt_at > %(now)s)
ORDER BY c.player_id, c.id
LIMIT %(limit)s
FOR NO KEY UPDATE OF c SKIP LOCKED
"""

_INSERT_ITEMS = """
INSERT INTO referrals_settlementitem (settlement_id, reward_id, prize_credit_id, amount)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[])
"""

_MARK_SETTLED = """
UPDATE referrals_referralreward SET status = 'settled', settled_at = %s
WHERE id = ANY(%s) AND status = 'pending'
"""

_BACKOFF = """
INSERT INTO referrals_payoutretry (player_id, failures, next_attempt_at, last_error)
SELECT p, 1, %(now)s + make_interval(secs => %(base)s), e
FROM unnest(%(players)s::bigint[], %(errors)s::text[]) AS t(p, e)
ON CONFLICT (player_id) DO UPDATE SET
    failures = referrals_payoutretry.failures + 1,
    next_attempt_at = %(now)s + make_interval(secs => LEAST(
        %(cap)s, %(base)s * power(2, LEAST(referrals_payoutretry.failures, 30))::bigint)),
    last_error = EXCLUDED.last_error
"""


class SettlementConflict(RuntimeError):
    """A claimed reward was no longer pending at the update: the batch is rolled back."""


def _claim(
    now: dt.datetime, limit: int
) -> tuple[list[tuple[int, int, Decimal]], list[tuple[int, int, Decimal]], bool]:
    """(rewards, credits, full): `full` when either claim hit the limit (more may be waiting)."""
    params = {"now": now, "limit": limit}
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_REWARDS, params)
        rewards = cursor.fetchall()
        cursor.execute(_CLAIM_CREDITS, params)
        credits = cursor.fetchall()
        full = len(rewards) >= limit or len(credits) >= limit
        if credits:
            cursor.execute(
                "SELECT prize_credit_id FROM referrals_settlementitem "
                "WHERE prize_credit_id = ANY(%s)",
                [[c[0] for c in credits]],
            )
            linked = {row[0] for row in cursor.fetchall()}
            credits = [c for c in credits if c[0] not in linked]
    return rewards, credits, full


def _settle_batch(
    rewards: list[tuple[int, int, Decimal]],
    credits: list[tuple[int, int, Decimal]],
    *,
    channel: PayoutChannel,
    channel_name: str,
    now: dt.datetime,
    settings: conf.ReferralSettings,
    counts: dict[str, Any],
) -> None:
    by_player: dict[int, list[tuple[str, int, Decimal]]] = defaultdict(list)
    for reward_id, player_id, amount in rewards:
        by_player[player_id].append(("reward", reward_id, amount))
    for credit_id, player_id, amount in credits:
        by_player[player_id].append(("credit", credit_id, amount))
    wallets = dict(Player.objects.filter(pk__in=by_player).values_list("pk", "wallet_address"))

    settlements: list[Settlement] = []
    payouts: list[Payout] = []
    for player_id in sorted(by_player):
        items = by_player[player_id]
        keys = tuple(sorted(f"{kind}:{item_id}" for kind, item_id, _ in items))
        payout = Payout(
            key=payout_key(keys),
            player_id=player_id,
            wallet_address=wallets.get(player_id, ""),
            amount=sum((amount for _, _, amount in items), ZERO),
            items=keys,
        )
        settlement = Settlement(
            player_id=player_id,
            total=payout.amount,
            item_count=len(items),
            channel=channel_name,
            payout_key=payout.key,
            created_at=now,
        )
        try:
            settlement.payout_reference = channel.pay(payout, now=now)
            settlement.status = SettlementStatus.PAID
        except Exception as exc:  # any channel failure is this player's alone
            settlement.status = SettlementStatus.FAILED
            settlement.error = f"{type(exc).__name__}: {exc}"[:2000] or "payout failed"
        settlements.append(settlement)
        payouts.append(payout)
    Settlement.objects.bulk_create(settlements)

    paid = [(s, p) for s, p in zip(settlements, payouts, strict=True) if s.status == "paid"]
    failed = [s for s in settlements if s.status == "failed"]
    item_rows: tuple[list[int], list[int | None], list[int | None], list[Decimal]] = (
        [],
        [],
        [],
        [],
    )
    reward_ids: list[int] = []
    for settlement, _payout in paid:
        for kind, item_id, amount in by_player[settlement.player_id]:
            item_rows[0].append(settlement.pk)
            item_rows[1].append(item_id if kind == "reward" else None)
            item_rows[2].append(item_id if kind == "credit" else None)
            item_rows[3].append(amount)
            if kind == "reward":
                reward_ids.append(item_id)

    with connection.cursor() as cursor:
        if paid:
            cursor.execute(_INSERT_ITEMS, list(item_rows))
            cursor.execute(_MARK_SETTLED, [now, reward_ids])
            if cursor.rowcount != len(reward_ids):
                raise SettlementConflict(
                    f"{len(reward_ids) - cursor.rowcount} claimed rewards were no longer pending"
                )
            _post_ledger(paid, by_player, leaves_platform=channel.leaves_platform, now=now)
            cursor.execute(
                "DELETE FROM referrals_payoutretry WHERE player_id = ANY(%s)",
                [[s.player_id for s, _ in paid]],
            )
            _notify(paid, now=now)
        if failed:
            cursor.execute(
                _BACKOFF,
                {
                    "now": now,
                    "base": settings.payout_retry_seconds,
                    "cap": settings.payout_retry_cap_seconds,
                    "players": [s.player_id for s in failed],
                    "errors": [s.error for s in failed],
                },
            )
    counts["settled_items"] += len(item_rows[0])
    counts["paid_settlements"] += len(paid)
    counts["failed_settlements"] += len(failed)
    counts["paid_cents"] += int(sum((s.total for s, _ in paid), ZERO) * 100)


def _post_ledger(
    paid: list[tuple[Settlement, Payout]],
    by_player: dict[int, list[tuple[str, int, Decimal]]],
    *,
    leaves_platform: bool,
    now: dt.datetime,
) -> None:
    """One transaction per paid settlement; all entries in ONE statement (the balance trigger
    checks each transaction at the end of the statement that inserts its entries)."""
    transactions = LedgerTransaction.objects.bulk_create(
        [
            LedgerTransaction(
                kind=LedgerTransaction.Kind.SETTLEMENT,
                settlement=settlement,
                memo=f"settlement {settlement.pk}: {settlement.item_count} items",
                created_at=now,
            )
            for settlement, _ in paid
        ]
    )
    entries: list[LedgerEntry] = []
    for txn, (settlement, _) in zip(transactions, paid, strict=True):
        by_source = {"reward": ZERO, "credit": ZERO}
        for kind, _, amount in by_player[settlement.player_id]:
            by_source[kind] += amount
        lines = [
            (Account.REFERRAL_EXPENSE, None, -by_source["reward"]),
            (Account.PRIZE_POOL, None, -by_source["credit"]),
            (Account.PLAYER_WALLET, settlement.player_id, settlement.total),
        ]
        if leaves_platform:
            lines += [
                (Account.PLAYER_WALLET, settlement.player_id, -settlement.total),
                (Account.PAYOUT_EXTERNAL, None, settlement.total),
            ]
        entries += [
            LedgerEntry(
                transaction=txn, account=account, player_id=player, amount=amount, created_at=now
            )
            for account, player, amount in lines
            if amount != ZERO
        ]
    LedgerEntry.objects.bulk_create(entries)


def _notify(paid: list[tuple[Settlement, Payout]], *, now: dt.datetime) -> None:
    # Same rows as games' notification_enqueue, written in one statement for the whole batch.
    Notification.objects.bulk_create(
        [
            Notification(
                player_id=settlement.player_id,
                kind="payout_paid",
                title=f"You were paid {settlement.total}",
                body=f"{settlement.item_count} referral rewards and prizes were paid out.",
                dedupe_key=f"settlement-paid:{settlement.pk}",
                due_at=now,
                next_attempt_at=now,
                created_at=now,
            )
            for settlement, _ in paid
        ],
        ignore_conflicts=True,
    )


def _refresh_cached_plans() -> None:
    """Re-plan this connection's cached foreign-key checks once per batch.

    PostgreSQL caches the plan of each foreign-key check per connection, costed at the size the
    referenced table had then. When settlements and ledger transactions grow from (nearly) empty
    within one run, every item's check kept a sequential scan of the growing table: measured here,
    100,000 items from empty tables took ~3x longer, all of it at COMMIT. Discarding the cached
    plans (not the prepared statements) lets the checks switch to the primary-key index once the
    tables outgrow a few pages; re-planning costs microseconds per batch.
    """
    with connection.cursor() as cursor:
        cursor.execute("DISCARD PLANS")


def settlement_run(*, now: dt.datetime, channel: PayoutChannel | None = None) -> dict[str, int]:
    """Job `settlement`: settle every eligible pending item, batch by batch; returns counts.

    Stops when a batch claims less than a full batch, or after REFERRAL_SETTLEMENT_MAX_SECONDS
    (`incomplete: 1`; the next run continues). Running it again settles nothing twice.
    """
    settings = conf.load()
    channel = channel or payout_channel()
    channel_name = f"{type(channel).__module__}.{type(channel).__qualname__}"
    deadline = time.monotonic() + settings.settlement_max_seconds
    limit = settings.settlement_batch_size
    counts = {
        "batches": 0,
        "settled_items": 0,
        "paid_settlements": 0,
        "failed_settlements": 0,
        "paid_cents": 0,
        "incomplete": 0,
    }
    while True:
        if time.monotonic() > deadline:
            counts["incomplete"] = 1
            return counts
        with transaction.atomic():
            # Fencing (chaos suite, fault 7): a run frozen past its lease TTL must not pay. The
            # check locks the lease row FOR SHARE until this batch commits, so no new holder
            # takes the lease while the batch is open and none of it is paid by a stale run.
            # Outside a job run (shell, tests) there is no lease and it checks nothing.
            fence_check()
            _refresh_cached_plans()
            rewards, credits, full = _claim(now, limit)
            if rewards or credits:
                counts["batches"] += 1
                _settle_batch(
                    rewards,
                    credits,
                    channel=channel,
                    channel_name=channel_name,
                    now=now,
                    settings=settings,
                    counts=counts,
                )
        if not full:
            return counts
