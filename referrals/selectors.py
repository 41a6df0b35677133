"""Reads of the referrals domain: the graph, balances (always derived from the ledger), and the
ledger's own health."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import Sum

from games.money import ZERO
from referrals.models import Account, LedgerEntry

_DESCENDANTS = """
WITH RECURSIVE tree(player_id, parent_id, depth) AS (
    SELECT referee_id, referrer_id, 1 FROM referrals_referral WHERE referrer_id = %s
    UNION ALL
    SELECT r.referee_id, r.referrer_id, t.depth + 1
    FROM referrals_referral r JOIN tree t ON r.referrer_id = t.player_id
    WHERE t.depth < %s
)
SELECT t.player_id, t.parent_id, t.depth, p.handle
FROM tree t JOIN games_player p ON p.id = t.player_id
ORDER BY t.depth, p.handle
LIMIT %s
"""


@dataclass(frozen=True)
class TreeNode:
    player_id: int
    parent_id: int
    depth: int  # 1 = referred directly, 2 and 3 = the tiers this player earns from
    handle: str


def referral_descendants(*, player_id: int, depth: int = 3, limit: int = 500) -> list[TreeNode]:
    """Players below `player_id` down to `depth` levels (the tiers it earns from), nearest first."""
    with connection.cursor() as cursor:
        cursor.execute(_DESCENDANTS, [player_id, depth, limit])
        return [TreeNode(*row) for row in cursor.fetchall()]


def player_balance(*, player_id: int) -> Decimal:
    """The player's in-app wallet balance: the sum of its ledger postings."""
    total = LedgerEntry.objects.filter(
        account=Account.PLAYER_WALLET, player_id=player_id
    ).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else ZERO


@dataclass(frozen=True)
class LedgerLine:
    entry_id: int
    transaction_id: int
    created_at: object
    amount: Decimal
    balance: Decimal  # running balance after this line
    memo: str


def player_ledger(*, player_id: int, limit: int = 200) -> list[LedgerLine]:
    """The newest `limit` wallet postings of a player with the running balance after each."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT * FROM (
                SELECT e.id, e.transaction_id, e.created_at, e.amount,
                       SUM(e.amount) OVER (ORDER BY e.id) AS balance, t.memo
                FROM referrals_ledgerentry e
                JOIN referrals_ledgertransaction t ON t.id = e.transaction_id
                WHERE e.account = 'player_wallet' AND e.player_id = %s
            ) lines ORDER BY id DESC LIMIT %s
            """,
            [player_id, limit],
        )
        return [LedgerLine(*row) for row in cursor.fetchall()]


def ledger_unbalanced_transactions() -> list[int]:
    """Ids of ledger transactions whose entries do not sum to zero, or that have no entries.

    Always empty while the balance trigger is in place; the tests assert it after every scenario.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.id FROM referrals_ledgertransaction t
            LEFT JOIN referrals_ledgerentry e ON e.transaction_id = t.id
            GROUP BY t.id HAVING count(e.id) = 0 OR sum(e.amount) <> 0
            ORDER BY t.id
            """
        )
        return [row[0] for row in cursor.fetchall()]
