"""Settlement: pay pending referral rewards and prize credits into the ledger, each exactly once.

A payout can leave the platform (an external payout service), so it is two-phase, and the
channel is never called inside a database transaction:

1. Claim (one transaction): up to REFERRAL_SETTLEMENT_BATCH_SIZE pending rewards and as many
   unpaid prize credits not linked to any settlement yet, with SELECT ... FOR NO KEY UPDATE SKIP
   LOCKED, skipping players on hold or in payout backoff (concurrent settlers take disjoint rows);
   claimed items that a concurrent settler linked after the claim's snapshot are dropped (a fresh
   statement under READ COMMITTED sees its committed links). Per player, a Settlement in state
   `sending` and one SettlementItem per item (the unique link per reward and per credit: no other
   settlement can take the item), with the idempotency key derived from the settlement's id.
   COMMIT.
2. Pay (no transaction): per settlement, `channel.pay()` with that key.
3. Record (one transaction): paid settlements become `paid` (only from `sending`, so a
   settlement is recorded once even if two runs re-sent it), their rewards are marked settled,
   one balanced ledger transaction per settlement is posted, a notification is queued, the
   player's backoff is cleared. A refusal (`PayoutError`) makes the settlement `failed` and
   deletes its item links (the items are pending again; a later settlement takes them under a
   new key) and backs the player off. An unknown outcome (`PayoutOutcomeUnknown`, any other
   exception) keeps it `sending`, notes the error and backs the player off.

Every run first resumes the settlements still `sending` (a crash or time limit between 1 and 3,
an unknown outcome whose backoff ended): it re-sends each with the SAME key and items, then
records the answer as in 3. So whatever dies, and wherever, an item is requested under one key
only, and settled once: a worker SIGKILLed in 1 or 3 loses its open transaction and nothing else;
one killed in 2 leaves `sending` settlements that the next run completes. A payout hold applies
to claims, not to settlements already sending (a payout in flight completes).

Backoff of a player whose payout failed or is unknown: REFERRAL_PAYOUT_RETRY_SECONDS x
2**(failures-1), capped at REFERRAL_PAYOUT_RETRY_CAP_SECONDS, times a random factor in
[0.8, 1.2) so that players who failed together do not all retry in the same run
(`core.backoff.backoff`, written out in the statement that counts the failure).
Cost of one batch of 5,000 items (the default), in-database channel: ~0.3 s, a few MB.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from games.models import Player
from games.money import ZERO
from referrals import conf
from referrals.models import (
    Account,
    Settlement,
    SettlementItem,
    SettlementStatus,
)
from referrals.payouts import Payout, PayoutChannel, PayoutError, payout_channel, payout_key
from referrals.services.failures import (
    checks_per_statement,
    failed_items_clear,
    failed_items_record,
    raise_unless_row_fault,
)
from scheduler.budget import Budget
from scheduler.errors import RUN_INTERRUPTS, error_text
from scheduler.locks import fence_check

_JOB = "settlement"

# Both claims skip items already linked to a settlement (sending ones), players on hold and
# players whose last payout failed until their backoff ends. `{set_aside}` chooses the pass: the
# normal one leaves out items recorded as failed (FailedItem), the retry pass takes only those
# that are due again (below the attempt limit, past their backoff).
_ELIGIBLE_REWARDS = """
FROM referrals_referralreward r
WHERE r.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM referrals_settlementitem i WHERE i.reward_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM referrals_payouthold h
                  WHERE h.player_id = r.beneficiary_id AND h.released_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                  WHERE b.player_id = r.beneficiary_id AND b.next_attempt_at > %(now)s)
  AND {set_aside} (SELECT 1 FROM referrals_faileditem f
                   WHERE f.reward_id = r.id AND f.job = 'settlement' {due})
"""

_ELIGIBLE_CREDITS = """
FROM games_prizecredit c
WHERE NOT EXISTS (SELECT 1 FROM referrals_settlementitem i WHERE i.prize_credit_id = c.id)
  AND NOT EXISTS (SELECT 1 FROM referrals_payouthold h
                  WHERE h.player_id = c.player_id AND h.released_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                  WHERE b.player_id = c.player_id AND b.next_attempt_at > %(now)s)
  AND {set_aside} (SELECT 1 FROM referrals_faileditem f
                   WHERE f.prize_credit_id = c.id AND f.job = 'settlement' {due})
"""

_DUE = "AND f.attempts < %(max_attempts)s AND f.next_attempt_at <= %(now)s"


def _claim_sql(*, retry: bool) -> tuple[str, str]:
    """(rewards, credits) claim statements of the normal pass, or of the retry pass."""
    where = (
        {"set_aside": "EXISTS", "due": _DUE} if retry else {"set_aside": "NOT EXISTS", "due": ""}
    )
    rewards = (
        "SELECT r.id, r.beneficiary_id, r.amount "
        + _ELIGIBLE_REWARDS.format(**where)
        + "ORDER BY r.beneficiary_id, r.id LIMIT %(limit)s FOR NO KEY UPDATE OF r SKIP LOCKED"
    )
    credits = (
        "SELECT c.id, c.player_id, c.amount "
        + _ELIGIBLE_CREDITS.format(**where)
        + "ORDER BY c.player_id, c.id LIMIT %(limit)s FOR NO KEY UPDATE OF c SKIP LOCKED"
    )
    return rewards, credits


# What a run with time left would still take now: items of resumable settlements, eligible items
# and set-aside items that are due again.
_BACKLOG = "SELECT " + " + ".join(  # noqa: S608 -- constant clauses, never input
    f"({part})"
    for part in (
        """SELECT count(*) FROM referrals_settlementitem i
           JOIN referrals_settlement s ON s.id = i.settlement_id
           WHERE s.status = 'sending'
             AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                             WHERE b.player_id = s.player_id AND b.next_attempt_at > %(now)s)""",
        *(
            "SELECT count(*) " + eligible.format(set_aside=set_aside, due=due)
            for eligible in (_ELIGIBLE_REWARDS, _ELIGIBLE_CREDITS)
            for set_aside, due in (("NOT EXISTS", ""), ("EXISTS", _DUE))
        ),
    )
)


# Settlements to resume: still sending, player not backing off. Holds do not stop them.
_RESUMABLE = """
SELECT s.id FROM referrals_settlement s
WHERE s.status = 'sending' AND s.id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM referrals_payoutretry b
                  WHERE b.player_id = s.player_id AND b.next_attempt_at > %(now)s)
ORDER BY s.id
LIMIT %(limit)s
"""

_NEW_IDS = """
SELECT nextval(pg_get_serial_sequence('referrals_settlement', 'id'))
FROM generate_series(1, %s)
"""

_INSERT_ITEMS = """
INSERT INTO referrals_settlementitem (settlement_id, reward_id, prize_credit_id, amount)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[])
"""

_RECORD_PAID = """
UPDATE referrals_settlement s SET status = 'paid', payout_reference = v.reference, error = ''
FROM unnest(%s::bigint[], %s::text[]) AS v(id, reference)
WHERE s.id = v.id AND s.status = 'sending'
RETURNING s.id
"""

_RECORD_FAILED = """
UPDATE referrals_settlement s SET status = 'failed', error = v.error
FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)
WHERE s.id = v.id AND s.status = 'sending'
RETURNING s.id
"""

_RECORD_UNKNOWN = """
UPDATE referrals_settlement s SET error = v.error
FROM unnest(%s::bigint[], %s::text[]) AS v(id, error)
WHERE s.id = v.id AND s.status = 'sending'
RETURNING s.id
"""

_MARK_SETTLED = """
UPDATE referrals_referralreward SET status = 'settled', settled_at = %s
WHERE id = ANY(%s::bigint[]) AND status = 'pending'
"""

# The wait after failure number n (1 on insert, the stored count + 1 on conflict) is
# `core.backoff.backoff(n, **_payout_backoff(settings))`, written out in SQL term for term (n - 1
# doublings of the base, capped, then the jitter factor): each player's count of failures is read
# and bumped inside this one statement. tests/referrals/test_settlement.py checks the two agree.
_BACKOFF = """
INSERT INTO referrals_payoutretry (player_id, failures, next_attempt_at, last_error)
SELECT p, 1, %(now)s + make_interval(secs => LEAST(%(cap)s, %(base)s)
    * (1 + %(jitter)s * random())), e
FROM unnest(%(players)s::bigint[], %(errors)s::text[]) AS t(p, e)
ON CONFLICT (player_id) DO UPDATE SET
    failures = referrals_payoutretry.failures + 1,
    next_attempt_at = %(now)s + make_interval(secs => LEAST(
        %(cap)s, %(base)s * power(2, LEAST(referrals_payoutretry.failures, 60)))
        * (1 + %(jitter)s * random())),
    last_error = EXCLUDED.last_error
"""


def _payout_backoff(settings: conf.ReferralSettings) -> dict[str, float]:
    """`core.backoff.backoff`'s parameters for a player's payout backoff: +-20 % around
    REFERRAL_PAYOUT_RETRY_SECONDS x 2**(failures - 1), capped at REFERRAL_PAYOUT_RETRY_CAP_SECONDS;
    that is 80 % of it, longer by up to half of that."""
    return {
        "base": 0.8 * settings.payout_retry_seconds,
        "cap": 0.8 * settings.payout_retry_cap_seconds,
        "jitter": 0.5,
    }


def _array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal ("{1,NULL,3}") of ids or amounts, sent as ONE text parameter.

    A batch passes thousands of ids and amounts; as Python lists, psycopg's client-side adaptation
    quotes every element through a regular expression (measured: ~3 s of a 100,000-item run's
    Python time). Ints, None and Decimals need no quoting, so the literal is built directly.
    """
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


class SettlementConflict(RuntimeError):
    """A reward of a settlement being recorded paid was no longer pending: rolled back."""


Item = tuple[str, int, Decimal]  # ("reward" | "credit", id, amount)


@dataclass
class _Work:
    """One settlement on its way: its items, the payout request and, once asked, the outcome."""

    settlement_id: int
    player_id: int
    total: Decimal
    items: list[Item]
    payout: Payout
    outcome: str = ""  # "paid", "failed" (refused) or "unknown"
    reference: str = ""
    error: str = ""


def _payout(settlement_id: int, player_id: int, wallet: str, items: list[Item]) -> Payout:
    return Payout(
        key=payout_key(settlement_id),
        player_id=player_id,
        wallet_address=wallet,
        amount=sum((amount for _, _, amount in items), ZERO),
        items=tuple(sorted(f"{kind}:{item_id}" for kind, item_id, _ in items)),
    )


def _claim(
    now: dt.datetime, limit: int, *, retry: bool = False
) -> tuple[list[Item], list[Item], bool]:
    """(rewards, credits, full) as (id, player, amount): `full` when either claim hit the limit
    (more may be waiting). `retry`: the set-aside items that are due again instead."""
    params = {"now": now, "limit": limit, "max_attempts": conf.load().item_max_attempts}
    claim_rewards, claim_credits = _claim_sql(retry=retry)
    with connection.cursor() as cursor:
        cursor.execute(claim_rewards, params)
        rewards = cursor.fetchall()
        cursor.execute(claim_credits, params)
        credits = cursor.fetchall()
        full = len(rewards) >= limit or len(credits) >= limit
        # Rows another settler linked or set aside (or retried, in the retry pass) after this
        # statement's snapshot: the row lock is ours now, so that settler committed; a fresh
        # statement sees what it wrote.
        not_due = "AND NOT (f.attempts < %(max_attempts)s AND f.next_attempt_at <= %(now)s)"
        for column, rows in (("reward_id", rewards), ("prize_credit_id", credits)):
            if rows:
                cursor.execute(
                    f"SELECT {column} FROM referrals_settlementitem "  # noqa: S608 -- constant
                    f"WHERE {column} = ANY(%(ids)s::bigint[]) UNION ALL "
                    f"SELECT {column} FROM referrals_faileditem f WHERE f.job = 'settlement' "
                    f"AND {column} = ANY(%(ids)s::bigint[]) {not_due if retry else ''}",
                    {**params, "ids": _array(row[0] for row in rows)},
                )
                taken = {row[0] for row in cursor.fetchall()}
                rows[:] = [row for row in rows if row[0] not in taken]
    return rewards, credits, full


def _open_settlements(
    rewards: list[tuple[int, int, Decimal]],
    credits: list[tuple[int, int, Decimal]],
    *,
    channel_name: str,
    now: dt.datetime,
) -> list[_Work]:
    """Phase 1, inside the claim's transaction: `sending` settlements that link the items."""
    by_player: dict[int, list[Item]] = defaultdict(list)
    for reward_id, player_id, amount in rewards:
        by_player[player_id].append(("reward", reward_id, amount))
    for credit_id, player_id, amount in credits:
        by_player[player_id].append(("credit", credit_id, amount))
    wallets = dict(Player.objects.filter(pk__in=by_player).values_list("pk", "wallet_address"))
    players = sorted(by_player)
    with connection.cursor() as cursor:
        cursor.execute(_NEW_IDS, [len(players)])
        ids = sorted(row[0] for row in cursor.fetchall())
    works = [
        _Work(
            settlement_id=settlement_id,
            player_id=player_id,
            total=payout.amount,
            items=by_player[player_id],
            payout=payout,
        )
        for settlement_id, player_id in zip(ids, players, strict=True)
        for payout in [
            _payout(settlement_id, player_id, wallets.get(player_id, ""), by_player[player_id])
        ]
    ]
    Settlement.objects.bulk_create(
        [
            Settlement(
                pk=work.settlement_id,
                player_id=work.player_id,
                status=SettlementStatus.SENDING,
                total=work.total,
                item_count=len(work.items),
                channel=channel_name,
                payout_key=work.payout.key,
                wallet_address=work.payout.wallet_address,
                created_at=now,
            )
            for work in works
        ]
    )
    rows: tuple[list[int], list[int | None], list[int | None], list[Decimal]] = ([], [], [], [])
    for work in works:
        for kind, item_id, amount in work.items:
            rows[0].append(work.settlement_id)
            rows[1].append(item_id if kind == "reward" else None)
            rows[2].append(item_id if kind == "credit" else None)
            rows[3].append(amount)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_ITEMS, [_array(column) for column in rows])
    return works


def _resumable(*, now: dt.datetime, after: int, limit: int) -> list[_Work]:
    """Settlements left `sending` by an earlier attempt, rebuilt with their key and items."""
    with connection.cursor() as cursor:
        cursor.execute(_RESUMABLE, {"now": now, "after": after, "limit": limit})
        ids = [row[0] for row in cursor.fetchall()]
    items: dict[int, list[Item]] = defaultdict(list)
    for settlement_id, reward_id, credit_id, amount in SettlementItem.objects.filter(
        settlement_id__in=ids
    ).values_list("settlement_id", "reward_id", "prize_credit_id", "amount"):
        kind, item_id = ("reward", reward_id) if reward_id else ("credit", credit_id)
        items[settlement_id].append((kind, item_id, amount))
    works = []
    for settlement in Settlement.objects.filter(pk__in=ids).order_by("pk"):
        payout = _payout(
            settlement.pk, settlement.player_id, settlement.wallet_address, items[settlement.pk]
        )
        # The stored key and total are what earlier attempts sent; they are what we send again.
        payout = Payout(
            key=settlement.payout_key,
            player_id=payout.player_id,
            wallet_address=payout.wallet_address,
            amount=settlement.total,
            items=payout.items,
        )
        works.append(
            _Work(
                settlement_id=settlement.pk,
                player_id=settlement.player_id,
                total=settlement.total,
                items=items[settlement.pk],
                payout=payout,
            )
        )
    return works


def _pay(works: list[_Work], *, channel: PayoutChannel, now: dt.datetime, budget: Budget) -> None:
    """Phase 2, outside any transaction: ask the channel; any exception is this player's alone.

    Stops asking when the budget is spent: the settlements not asked stay `sending`, and the next
    run resumes them under the same keys, exactly as after a crash here."""
    for work in works:
        if budget.spent:
            return
        if channel.leaves_platform:
            # A run frozen past its lease does not send money out (the recording is fenced too).
            with transaction.atomic():
                fence_check()
        try:
            work.reference = channel.pay(work.payout, now=now)
            work.outcome = "paid"
        except PayoutError as exc:  # certainly not paid
            work.outcome = "failed"
            work.error = error_text(exc)
        except RUN_INTERRUPTS:
            # The run ends: this settlement and the ones not asked stay `sending` and the next
            # run asks again under the same keys, as after a crash here.
            raise
        except Exception as exc:  # may have been paid: same settlement, same key, later
            work.outcome = "unknown"
            work.error = "outcome unknown: " + error_text(exc, limit=1980)


def _record(
    works: list[_Work],
    *,
    leaves_platform: bool,
    now: dt.datetime,
    settings: conf.ReferralSettings,
    counts: dict[str, Any],
) -> None:
    """Phase 3, one transaction: the channel's answers into settlements, items and the ledger."""
    by_outcome: dict[str, list[_Work]] = defaultdict(list)
    for work in works:
        by_outcome[work.outcome].append(work)
    with connection.cursor() as cursor:

        def update(sql: str, outcome: str, values: list[str]) -> list[_Work]:
            group = by_outcome[outcome]
            if not group:
                return []
            cursor.execute(sql, [[w.settlement_id for w in group], values])
            updated = {row[0] for row in cursor.fetchall()}
            return [w for w in group if w.settlement_id in updated]

        paid = update(_RECORD_PAID, "paid", [w.reference for w in by_outcome["paid"]])
        failed = update(_RECORD_FAILED, "failed", [w.error for w in by_outcome["failed"]])
        unknown = update(_RECORD_UNKNOWN, "unknown", [w.error for w in by_outcome["unknown"]])
        if paid:
            reward_ids = [i for w in paid for kind, i, _ in w.items if kind == "reward"]
            cursor.execute(_MARK_SETTLED, [now, _array(reward_ids)])
            if cursor.rowcount != len(reward_ids):
                raise SettlementConflict(
                    f"{len(reward_ids) - cursor.rowcount} rewards of paid settlements "
                    "were no longer pending"
                )
            _post_ledger(paid, leaves_platform=leaves_platform, now=now)
            cursor.execute(
                "DELETE FROM referrals_payoutretry WHERE player_id = ANY(%s)",
                [[w.player_id for w in paid]],
            )
            _notify(paid, now=now)
        if failed:
            # Refused: the items go back to pending for a later settlement (with a new key).
            cursor.execute(
                "DELETE FROM referrals_settlementitem WHERE settlement_id = ANY(%s)",
                [[w.settlement_id for w in failed]],
            )
        if failed or unknown:
            cursor.execute(
                _BACKOFF,
                {
                    "now": now,
                    **_payout_backoff(settings),
                    "players": [w.player_id for w in failed + unknown],
                    "errors": [w.error for w in failed + unknown],
                },
            )
    counts["settled_items"] += sum(len(w.items) for w in paid)
    counts["paid_settlements"] += len(paid)
    counts["failed_settlements"] += len(failed)
    counts["unknown_settlements"] += len(unknown)
    counts["paid_cents"] += int(sum((w.total for w in paid), ZERO) * 100)


def _record_each(
    works: list[_Work],
    *,
    leaves_platform: bool,
    now: dt.datetime,
    settings: conf.ReferralSettings,
    counts: dict[str, Any],
) -> None:
    """Phase 3 inside the record transaction: all settlements in one go, or, when that fails,
    each in its own savepoint. A settlement whose answer cannot be recorded (any error, e.g. a
    reward edited by hand meanwhile) may have been paid already, so it is never failed: it is
    kept `sending` like an unknown outcome (error noted, player backed off) and re-sent under the
    same key once the backoff ends; the others are recorded."""
    record = {"leaves_platform": leaves_platform, "now": now, "settings": settings}
    if len(works) > 1:
        try:
            with transaction.atomic():
                _record(works, counts=counts, **record)
            return
        except Exception as exc:
            raise_unless_row_fault(exc)
    for work in works:
        try:
            with transaction.atomic():
                _record([work], counts=counts, **record)
        except Exception as exc:
            raise_unless_row_fault(exc)
            work.outcome = "unknown"
            work.error = "not recorded: " + error_text(exc, limit=1985)
            with transaction.atomic():
                _record([work], counts=counts, **record)
            counts["unrecorded_settlements"] += 1


def _open_each(
    rewards: list[tuple[int, int, Decimal]],
    credits: list[tuple[int, int, Decimal]],
    *,
    channel_name: str,
    now: dt.datetime,
    counts: dict[str, Any],
    one_per_item: bool,
) -> list[_Work]:
    """Phase 1 inside the claim transaction, isolated: all players' settlements in one go, or,
    when that fails, one player's settlement per savepoint. Items of a settlement that cannot be
    opened (any error, e.g. a total that overflows its column) are recorded as `FailedItem`s and
    left out of later claims until they are due again. `one_per_item` (the retry of set-aside
    items): one settlement per item, so a group that failed together is split up and only a
    truly bad item fails again; an opened item's failure record is cleared."""
    if not one_per_item:
        try:
            with transaction.atomic():
                return _open_settlements(rewards, credits, channel_name=channel_name, now=now)
        except Exception as exc:
            raise_unless_row_fault(exc)
    groups: dict[object, tuple[list, list]] = defaultdict(lambda: ([], []))
    for row in rewards:
        groups[("reward", row[0]) if one_per_item else row[1]][0].append(row)
    for row in credits:
        groups[("credit", row[0]) if one_per_item else row[1]][1].append(row)
    works: list[_Work] = []
    for group_rewards, group_credits in groups.values():
        reward_ids = [row[0] for row in group_rewards]
        credit_ids = [row[0] for row in group_credits]
        try:
            with transaction.atomic():
                opened = _open_settlements(
                    group_rewards, group_credits, channel_name=channel_name, now=now
                )
                failed_items_clear(job=_JOB, rewards=reward_ids, credits=credit_ids)
            works += opened
        except Exception as exc:
            raise_unless_row_fault(exc)
            failed_items_record(job=_JOB, rewards=reward_ids, credits=credit_ids, exc=exc, now=now)
            counts["set_aside_items"] += len(reward_ids) + len(credit_ids)
    return works


_POST_LEDGER = """
WITH txn AS (
    INSERT INTO referrals_ledgertransaction (kind, settlement_id, memo, created_at)
    SELECT 'settlement', v.settlement_id, 'settlement ' || v.settlement_id || ': '
           || v.items || ' items', %(now)s
    FROM unnest(%(settlements)s::bigint[], %(items)s::integer[]) AS v(settlement_id, items)
    RETURNING id, settlement_id
)
INSERT INTO referrals_ledgerentry (transaction_id, account, player_id, amount, created_at)
SELECT txn.id, e.account, e.player_id, e.amount, %(now)s
FROM unnest(%(entry_settlements)s::bigint[], %(accounts)s::text[], %(players)s::bigint[],
            %(amounts)s::numeric[])
     WITH ORDINALITY AS e(settlement_id, account, player_id, amount, n)
JOIN txn ON txn.settlement_id = e.settlement_id
ORDER BY e.n
"""

# Same rows as games' notification_enqueue, for the whole batch in one statement.
_NOTIFY = """
INSERT INTO games_notification
    (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at, attempts,
     last_error, delivered_at, created_at)
SELECT v.player_id, 'payout_paid', 'You were paid ' || v.total,
       v.items || ' referral rewards and prizes were paid out.',
       'settlement-paid:' || v.settlement_id, 'pending', %(now)s, %(now)s, 0, '', NULL, %(now)s
FROM unnest(%(players)s::bigint[], %(totals)s::numeric[], %(items)s::integer[],
            %(settlements)s::bigint[]) AS v(player_id, total, items, settlement_id)
ON CONFLICT DO NOTHING
"""


def _post_ledger(paid: list[_Work], *, leaves_platform: bool, now: dt.datetime) -> None:
    """One transaction per paid settlement and all their entries in ONE statement (the balance
    trigger checks each transaction at the end of the statement that inserts its entries).

    Built as array literals and inserted set-based: at a batch of 5,000 items the ORM's
    bulk_create of the transactions and entries cost more Python time than the inserts."""
    entries: tuple[list[int], list[str], list[int | None], list[Decimal]] = ([], [], [], [])
    for work in paid:
        by_source = {"reward": ZERO, "credit": ZERO}
        for kind, _, amount in work.items:
            by_source[kind] += amount
        lines = [
            (Account.REFERRAL_EXPENSE, None, -by_source["reward"]),
            (Account.PRIZE_POOL, None, -by_source["credit"]),
            (Account.PLAYER_WALLET, work.player_id, work.total),
        ]
        if leaves_platform:
            lines += [
                (Account.PLAYER_WALLET, work.player_id, -work.total),
                (Account.PAYOUT_EXTERNAL, None, work.total),
            ]
        for account, player, amount in lines:
            if amount != ZERO:
                entries[0].append(work.settlement_id)
                entries[1].append(str(account))
                entries[2].append(player)
                entries[3].append(amount)
    with connection.cursor() as cursor:
        cursor.execute(
            _POST_LEDGER,
            {
                "now": now,
                "settlements": _array(w.settlement_id for w in paid),
                "items": _array(len(w.items) for w in paid),
                "entry_settlements": _array(entries[0]),
                "accounts": _array(entries[1]),  # the account names need no quoting
                "players": _array(entries[2]),
                "amounts": _array(entries[3]),
            },
        )


def _notify(paid: list[_Work], *, now: dt.datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _NOTIFY,
            {
                "now": now,
                "players": _array(w.player_id for w in paid),
                "totals": _array(w.total for w in paid),
                "items": _array(len(w.items) for w in paid),
                "settlements": _array(w.settlement_id for w in paid),
            },
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


def settlement_run(
    *, now: dt.datetime, channel: PayoutChannel | None = None, budget: Budget | None = None
) -> dict[str, int]:
    """Job `settlement`: resume the settlements still sending, then settle every eligible pending
    item, batch by batch, then retry the set-aside items that are due again; returns counts.

    Stops starting work when `budget` (the job's time budget, the one limit of a run) is spent,
    reporting in `backlog` how many items a run with time left would still take now; the next
    run continues. A settlement that cannot be opened sets its items aside (`set_aside_items`),
    one whose answer cannot be recorded stays sending (`unrecorded_settlements`): the rest of the
    batch goes on. Running it again settles nothing twice and sends no item under a second key.
    """
    settings = conf.load()
    budget = budget or Budget.unlimited()
    channel = channel or payout_channel()
    channel_name = f"{type(channel).__module__}.{type(channel).__qualname__}"
    limit = settings.settlement_batch_size
    counts = {
        "batches": 0,
        "settled_items": 0,
        "paid_settlements": 0,
        "failed_settlements": 0,
        "unknown_settlements": 0,
        "resumed_settlements": 0,
        "unrecorded_settlements": 0,
        "set_aside_items": 0,
        "retried_items": 0,
        "paid_cents": 0,
        "backlog": 0,
    }

    def finish(works: list[_Work]) -> None:
        _pay(works, channel=channel, now=now, budget=budget)
        asked = [work for work in works if work.outcome]
        if not asked:
            return
        with transaction.atomic():
            # Fencing (chaos suite, fault 7): a run frozen past its lease TTL records nothing; its
            # settlements stay sending and the lease's next holder re-sends them, same keys.
            fence_check()
            checks_per_statement()
            _record_each(
                asked,
                leaves_platform=channel.leaves_platform,
                now=now,
                settings=settings,
                counts=counts,
            )

    def out_of_time() -> dict[str, int]:
        with connection.cursor() as cursor:
            cursor.execute(_BACKLOG, {"now": now, "max_attempts": settings.item_max_attempts})
            counts["backlog"] = cursor.fetchone()[0]
        return counts

    after = 0
    while True:  # resume first: these items may have been paid already
        if budget.spent:
            return out_of_time()
        works = _resumable(now=now, after=after, limit=limit)
        if not works:
            break
        counts["resumed_settlements"] += len(works)
        finish(works)
        after = works[-1].settlement_id

    for retry in (False, True):  # the healthy items first, then the set-aside ones due again
        full = True
        while full:
            if budget.spent:
                return out_of_time()
            with transaction.atomic():
                # Fencing: a run frozen past its lease TTL claims nothing. The check locks the
                # lease row FOR SHARE until this transaction commits, so no new holder takes the
                # lease meanwhile. Outside a job run (shell, tests) there is no lease.
                fence_check()
                _refresh_cached_plans()
                checks_per_statement()
                rewards, credits, full = _claim(now, limit, retry=retry)
                works = (
                    _open_each(
                        rewards,
                        credits,
                        channel_name=channel_name,
                        now=now,
                        counts=counts,
                        one_per_item=retry,
                    )
                    if rewards or credits
                    else []
                )
            if retry:
                counts["retried_items"] += len(rewards) + len(credits)
            if works:
                counts["batches"] += 1
                finish(works)
    # The last payouts may have been cut short by the budget (left sending, for the next run).
    return out_of_time() if budget.spent else counts
