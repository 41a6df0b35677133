"""Referral benchmarks: ours against hand-written set-based SQL on the same database, same run.

1. Tier-2 and tier-3 creation for N qualifying events: `referral_tier2_create` +
   `referral_tier3_create` (bounded batches, cursor, ON CONFLICT) vs one hand-written
   INSERT ... SELECT creating both tiers. Target ratio <= 1.5.
2. Settling N pending rewards: `settlement_run` (claimed batches with SKIP LOCKED, payout per
   player, ledger, notifications) vs a hand-written set-based settlement writing the same rows in
   one transaction. Items/s and ratio; target <= 2.

Data: chains of four players (a -> b -> c -> d); every event is a paid session of a `d` player
with its tier-1 reward, as the session_finished receiver writes it. `--rows N` sets the events.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable

from bench._env import servers
from devtools.gendocs import Block, table

NOW = dt.datetime(2026, 3, 4, 12, 0, 40, tzinfo=dt.UTC)
EVENTS_PER_PLAYER = 50

SEED = """
INSERT INTO games_player (handle, wallet_address, created_at)
SELECT 'bench-' || g, '0xbench' || g, %(at)s FROM generate_series(1, %(players)s) g;

-- chains of four: player k refers k+1 within each group of four consecutive ids
INSERT INTO referrals_referral (referrer_id, referee_id, created_at)
SELECT p.id - 1, p.id, %(at)s
FROM games_player p
WHERE p.handle LIKE 'bench-%%' AND (p.id - (SELECT min(id) FROM games_player)) %% 4 <> 0;

INSERT INTO games_gamesession (player_id, game, status, entry_fee, score, started_at, finished_at)
SELECT p.id, 'snake', 'finished', (ARRAY[0.25, 0.35, 1.05, 2.00, 5.00])[1 + g %% 5], 1,
       %(at)s + make_interval(secs => g), %(at)s + make_interval(secs => g + 60)
FROM games_player p, generate_series(1, %(per_player)s) g
WHERE (p.id - (SELECT min(id) FROM games_player)) %% 4 = 3;

INSERT INTO referrals_referralreward
    (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status, created_at)
SELECT s.id, 1, r.referrer_id, s.finished_at, s.entry_fee, 0.10,
       referrals_money_round(s.entry_fee * 0.10), 'pending', s.finished_at
FROM games_gamesession s JOIN referrals_referral r ON r.referee_id = s.player_id;
"""

BASELINE_TIERS = """
INSERT INTO referrals_referralreward
    (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status, created_at)
SELECT s.id, t.tier, CASE t.tier WHEN 2 THEN l2.referrer_id ELSE l3.referrer_id END,
       s.finished_at, s.entry_fee, t.rate, referrals_money_round(s.entry_fee * t.rate),
       'pending', %(now)s
FROM games_gamesession s
JOIN referrals_referral l1 ON l1.referee_id = s.player_id AND l1.created_at <= s.finished_at
JOIN referrals_referral l2 ON l2.referee_id = l1.referrer_id AND l2.created_at <= s.finished_at
CROSS JOIN (VALUES (2, 0.05), (3, 0.02)) AS t(tier, rate)
LEFT JOIN referrals_referral l3
       ON t.tier = 3 AND l3.referee_id = l2.referrer_id AND l3.created_at <= s.finished_at
WHERE s.status = 'finished' AND s.entry_fee > 0 AND s.finished_at <= %(now)s
  AND (t.tier = 2 OR l3.id IS NOT NULL)
  AND referrals_money_round(s.entry_fee * t.rate) > 0
ON CONFLICT (session_id, tier) DO NOTHING
"""

BASELINE_SETTLEMENT = [
    """
    INSERT INTO referrals_settlement
        (player_id, status, total, item_count, channel, payout_key, payout_reference, error,
         created_at)
    SELECT beneficiary_id, 'paid', sum(amount), count(*), 'bench.sql', 'bench-sql',
           'wallet', '', %(now)s
    FROM referrals_referralreward WHERE status = 'pending' GROUP BY beneficiary_id
    """,
    """
    INSERT INTO referrals_settlementitem (settlement_id, reward_id, prize_credit_id, amount)
    SELECT s.id, r.id, NULL, r.amount
    FROM referrals_referralreward r
    JOIN referrals_settlement s ON s.player_id = r.beneficiary_id AND s.payout_key = 'bench-sql'
    WHERE r.status = 'pending'
    """,
    """
    INSERT INTO referrals_ledgertransaction (kind, settlement_id, memo, created_at)
    SELECT 'settlement', s.id, 'settlement ' || s.id, %(now)s
    FROM referrals_settlement s WHERE s.payout_key = 'bench-sql'
    """,
    """
    INSERT INTO referrals_ledgerentry (transaction_id, account, player_id, amount, created_at)
    SELECT t.id, e.account, e.player_id, e.amount, %(now)s
    FROM referrals_settlement s
    JOIN referrals_ledgertransaction t ON t.settlement_id = s.id
    CROSS JOIN LATERAL (VALUES ('referral_expense', NULL::bigint, -s.total),
                               ('player_wallet', s.player_id, s.total)) AS e(account, player_id,
                                                                              amount)
    WHERE s.payout_key = 'bench-sql'
    """,
    """
    UPDATE referrals_referralreward SET status = 'settled', settled_at = %(now)s
    WHERE status = 'pending'
    """,
    """
    INSERT INTO games_notification
        (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at, attempts,
         last_error, created_at)
    SELECT s.player_id, 'payout_paid', 'You were paid ' || s.total, '',
           'settlement-paid:' || s.id, 'pending', %(now)s, %(now)s, 0, '', %(now)s
    FROM referrals_settlement s WHERE s.payout_key = 'bench-sql'
    """,
]

RESET_SETTLEMENT = """
TRUNCATE referrals_settlementitem, referrals_ledgerentry, referrals_ledgertransaction,
         referrals_settlement, referrals_payoutretry, games_inboxmessage, games_notification;
UPDATE referrals_referralreward SET status = 'pending', settled_at = NULL
WHERE status = 'settled';
"""


def _sql(statement: str, params: dict[str, object] | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or {})
        return cursor.rowcount


def _vacuum() -> None:
    from django.db import connection

    # Each contender starts from freshly vacuumed, analysed tables.
    with connection.cursor() as cursor:
        for table in (
            "referrals_referralreward",
            "referrals_settlement",
            "referrals_settlementitem",
            "referrals_ledgerentry",
            "referrals_ledgertransaction",
            "referrals_tierprogress",
            "games_notification",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")


def _timed(work: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def _reset_tiers() -> None:
    _sql("DELETE FROM referrals_referralreward WHERE tier > 1")
    _sql("DELETE FROM referrals_tierprogress")
    _vacuum()


def _tiers_ours() -> int:
    from referrals.services import referral_tier2_create, referral_tier3_create

    return (
        referral_tier2_create(now=NOW + dt.timedelta(days=30))["created"]
        + referral_tier3_create(now=NOW + dt.timedelta(days=30))["created"]
    )


def _tiers_baseline() -> int:
    from django.db import transaction

    with transaction.atomic():
        return _sql(BASELINE_TIERS, {"now": NOW + dt.timedelta(days=30)})


def _settle_ours() -> int:
    from referrals.services import settlement_run

    return settlement_run(now=NOW + dt.timedelta(days=30))["settled_items"]


def _settle_baseline() -> int:
    from django.db import transaction

    with transaction.atomic():
        counts = [_sql(s, {"now": NOW + dt.timedelta(days=30)}) for s in BASELINE_SETTLEMENT]
    return counts[1]


def _check_ledger() -> None:
    from referrals.selectors import ledger_unbalanced_transactions

    assert ledger_unbalanced_transactions() == [], "ledger does not balance"
    assert _sql("SELECT 1 FROM referrals_referralreward WHERE status = 'pending'") == 0


def main(argv: list[str]) -> dict[str, list[Block]]:
    parser = argparse.ArgumentParser(prog="bench referrals")
    parser.add_argument("--rows", type=int, default=100_000, help="qualifying events (100,000)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, alternating order (2)")
    args = parser.parse_args(argv)
    rows = max(EVENTS_PER_PLAYER, args.rows - args.rows % EVENTS_PER_PLAYER)
    players = rows // EVENTS_PER_PLAYER * 4

    with servers():
        from django.db import transaction

        with transaction.atomic():
            _sql(SEED, {"at": NOW, "players": players, "per_player": EVENTS_PER_PLAYER})
        _vacuum()
        events = _sql("SELECT 1 FROM referrals_referralreward WHERE tier = 1")
        print(f"{events:,} qualifying events, {players:,} players in chains of four")

        # 1. tier-2/3 creation, alternating which goes first
        ours_t: list[float] = []
        base_t: list[float] = []
        created_by: dict[str, set[int]] = {"ours": set(), "sql": set()}
        for round_ in range(args.repeat):
            order = [("ours", _tiers_ours), ("sql", _tiers_baseline)]
            for name, work in order if round_ % 2 == 0 else order[::-1]:
                _reset_tiers()
                seconds, created = _timed(work)
                (ours_t if name == "ours" else base_t).append(seconds)
                created_by[name].add(created)
        # Both create the same rows (rewards that round to 0.00 are not created by either).
        assert len(created_by["ours"] | created_by["sql"]) == 1, created_by
        [created] = created_by["ours"]
        ours, base = statistics.median(ours_t), statistics.median(base_t)
        print(
            f"tier 2+3 creation, {created:,} rewards: ours {ours:.2f} s, "
            f"hand-written INSERT ... SELECT {base:.2f} s, ratio {ours / base:.2f} (target <= 1.5)"
        )
        tiers_rounds = ", ".join(f"{o:.2f}/{b:.2f}" for o, b in zip(ours_t, base_t, strict=True))
        print("  per round (ours / hand-written, s): " + tiers_rounds)
        results = [
            [
                f"tier 2 + 3 creation, {created:,} rewards, vs one hand-written INSERT ... SELECT",
                f"{ours / base:.2f}x (target <= 1.5); medians {ours:.2f} s vs {base:.2f} s; "
                f"per round (ours / hand-written, s): {tiers_rounds}",
            ]
        ]

        # 2. settlement of the tier-1 rewards (N pending items)
        _reset_tiers()
        ours_s: list[float] = []
        base_s: list[float] = []
        for round_ in range(args.repeat):
            order = [("ours", _settle_ours), ("sql", _settle_baseline)]
            for name, work in order if round_ % 2 == 0 else order[::-1]:
                _sql(RESET_SETTLEMENT)
                _vacuum()
                seconds, settled = _timed(work)
                _check_ledger()
                (ours_s if name == "ours" else base_s).append(seconds)
                assert settled == events, f"{name} settled {settled}, expected {events}"
        ours, base = statistics.median(ours_s), statistics.median(base_s)
        print(
            f"settlement of {events:,} items: ours {ours:.2f} s ({events / ours:,.0f} items/s), "
            f"hand-written set-based SQL {base:.2f} s ({events / base:,.0f} items/s), "
            f"ratio {ours / base:.2f} (target <= 2)"
        )
        settle_rounds = ", ".join(f"{o:.2f}/{b:.2f}" for o, b in zip(ours_s, base_s, strict=True))
        print("  per round (ours / hand-written, s): " + settle_rounds)
        results.append(
            [
                f"settlement of {events:,} items (two-phase payout) vs a hand-written set-based "
                "settlement",
                f"{ours / base:.2f}x (target <= 2); {events / ours:,.0f} vs "
                f"{events / base:,.0f} items/s; per round (ours / hand-written, s): "
                f"{settle_rounds}",
            ]
        )
    caption = (
        f"{events:,} qualifying events, {players:,} players in chains of four; medians of "
        f"{args.repeat} rounds alternating which side goes first."
    )
    return {"referrals": [table(["measure", "result"], results, caption)]}
