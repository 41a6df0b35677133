"""Money to move: players with pending referral rewards and unpaid prize credits, in a few SQL
statements (the settlement suite's crash-test seed, parameterised)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection

from referrals.models import ReferralReward, SettlementItem

SEEDED_AT = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)

_SEED = """
INSERT INTO games_player (handle, wallet_address, created_at)
SELECT %(tag)s || '-' || g, '0xchaos', %(now)s FROM generate_series(1, %(players)s) g;

INSERT INTO games_gamesession (player_id, game, status, entry_fee, score, started_at, finished_at)
SELECT p.id, 'snake', 'finished', 1.37, 1, %(now)s, %(now)s
FROM games_player p, generate_series(1, %(per_player)s)
WHERE p.handle LIKE %(tag)s || '-%%';

-- each session rewards the next player of the same tag (a ring is fine for settlement)
INSERT INTO referrals_referralreward
    (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status, created_at)
SELECT s.id, 1,
       coalesce((SELECT min(id) FROM games_player WHERE id > s.player_id
                 AND handle LIKE %(tag)s || '-%%'),
                (SELECT min(id) FROM games_player WHERE handle LIKE %(tag)s || '-%%')),
       %(now)s, 1.37, 0.1, 0.14, 'pending', %(now)s
FROM games_gamesession s JOIN games_player p ON p.id = s.player_id
WHERE p.handle LIKE %(tag)s || '-%%';

INSERT INTO games_prizepool
    (game, period, period_start, amount, carried_in, status, winner_id, winning_score,
     finalised_at, created_at)
SELECT 'pong', 'daily', DATE '2025-01-01' + %(first_day)s + g, 9.99, 0, 'finalised',
       (SELECT id FROM games_player WHERE handle LIKE %(tag)s || '-%%'
        ORDER BY id OFFSET (g %% %(players)s) LIMIT 1), 1, %(now)s, %(now)s
FROM generate_series(1, %(credits)s) g;

INSERT INTO games_prizecredit (pool_id, player_id, amount, created_at)
SELECT p.id, p.winner_id, p.amount, %(now)s FROM games_prizepool p
WHERE p.winner_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM games_prizecredit c WHERE c.pool_id = p.id);
"""


def seed_money(*, tag: str, players: int, per_player: int, credits: int, first_day: int = 0) -> int:
    """Seed pending items; returns how many (rewards + credits) were added."""
    before = pending_items()
    with connection.cursor() as cursor:
        cursor.execute(
            _SEED,
            {
                "tag": tag,
                "now": SEEDED_AT,
                "players": players,
                "per_player": per_player,
                "credits": credits,
                "first_day": first_day,
            },
        )
    return pending_items() - before


def pending_items() -> int:
    """Rewards not settled plus prize credits not in a paid settlement. Items of a `sending`
    settlement (claimed, payout outcome not recorded yet) are still pending."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM referrals_referralreward WHERE status = 'pending') + "
            "(SELECT count(*) FROM games_prizecredit c WHERE NOT EXISTS ("
            "SELECT 1 FROM referrals_settlementitem i JOIN referrals_settlement s "
            "ON s.id = i.settlement_id WHERE i.prize_credit_id = c.id AND s.status = 'paid'))"
        )
        return cursor.fetchone()[0]


def settled_items() -> int:
    """Items of paid settlements (a `sending` one has claimed its items but not paid them)."""
    return SettlementItem.objects.filter(settlement__status="paid").count()


def settled_rewards() -> int:
    return ReferralReward.objects.filter(status="settled").count()
