"""A settler SIGKILLed in the middle of a batch loses nothing, and its rerun pays nothing twice.

The settler runs in a real subprocess against this test's database (visible to it only because
the test is transactional). The first test kills it while its backend is inside an open batch
transaction, after some batches have committed; the second lets an external channel pay, then
kills the settler before it records the payment.
"""

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from referrals.models import Account, LedgerEntry, ReferralReward, Settlement, SettlementItem
from referrals.payouts import Payout, WalletPayout
from referrals.services import settlement_run
from tests.referrals.conftest import at

NOW = at(2026, 3, 4, 12, 0, 40)
ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "killable-settler"
SETTLER = (
    "import datetime as dt, django; django.setup(); "
    "from referrals.services import settlement_run; "
    "print(settlement_run(now=dt.datetime(2026, 3, 4, 12, 0, 40, tzinfo=dt.UTC)))"
)

SEED = """
INSERT INTO games_player (handle, wallet_address, created_at)
SELECT 'crash-' || g, '0xcrash', %(now)s FROM generate_series(1, %(players)s) g;

INSERT INTO games_gamesession (player_id, game, status, entry_fee, score, started_at, finished_at)
SELECT p.id, 'snake', 'finished', 1.37, 1, %(now)s, %(now)s
FROM games_player p, generate_series(1, %(per_player)s)
WHERE p.handle LIKE 'crash-%%';

-- each session rewards the player with the next id (a ring is fine for settlement)
INSERT INTO referrals_referralreward
    (session_id, tier, beneficiary_id, event_at, base_amount, rate, amount, status, created_at)
SELECT s.id, 1, coalesce((SELECT min(id) FROM games_player WHERE id > s.player_id),
                         (SELECT min(id) FROM games_player)),
       %(now)s, 1.37, 0.1, 0.14, 'pending', %(now)s
FROM games_gamesession s;

INSERT INTO games_prizepool
    (game, period, period_start, amount, carried_in, status, winner_id, winning_score,
     finalised_at, created_at)
SELECT 'pong', 'daily', DATE '2025-01-01' + g, 9.99, 0, 'finalised',
       (SELECT id FROM games_player ORDER BY id OFFSET (g %% %(players)s) LIMIT 1), 1,
       %(now)s, %(now)s
FROM generate_series(1, %(credits)s) g;

INSERT INTO games_prizecredit (pool_id, player_id, amount, created_at)
SELECT id, winner_id, amount, %(now)s FROM games_prizepool;
"""


def database_url() -> str:
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"])
    return f"postgres://{auth}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def settled_rewards() -> int:
    return ReferralReward.objects.filter(status="settled").count()


def settler_in_open_transaction() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND xact_start IS NOT NULL "
            "AND state IN ('active', 'idle in transaction')",
            [APP_NAME],
        )
        return cursor.fetchone()[0] > 0


def settler_backend_gone() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APP_NAME],
        )
        return cursor.fetchone()[0] == 0


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {condition.__name__}"
        time.sleep(0.002)


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_a_settler_killed_mid_batch_then_rerun_settles_every_item_exactly_once():
    # given 60,000 pending rewards for 300 players and 150 unpaid prize credits
    batch = 2500
    with connection.cursor() as cursor:
        cursor.execute(SEED, {"now": NOW, "players": 300, "per_player": 200, "credits": 150})
    total_rewards = ReferralReward.objects.count()
    assert total_rewards == 60_000
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REFERRAL_SETTLEMENT_BATCH_SIZE": str(batch),
        "PGAPPNAME": APP_NAME,  # libpq reads it: lets the test find the settler's backend
    }
    settler = subprocess.Popen(
        [sys.executable, "-c", SETTLER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # when, after at least one batch committed, it is SIGKILLed inside an open batch
        def some_batches_committed_and_one_open() -> bool:
            assert settler.poll() is None, settler.communicate()
            return settled_rewards() >= batch and settler_in_open_transaction()

        wait_for(some_batches_committed_and_one_open)
        settler.send_signal(signal.SIGKILL)
    finally:
        settler.wait(timeout=30)
    assert settler.returncode == -signal.SIGKILL
    wait_for(settler_backend_gone)  # PostgreSQL rolled the open batch back
    # then what committed are whole batches only, and some work is left
    after_kill = settled_rewards()
    credits_after_kill = SettlementItem.objects.filter(
        prize_credit__isnull=False, settlement__status="paid"
    ).count()
    assert after_kill % batch == 0
    assert 0 < after_kill < total_rewards
    # when the run is redelivered
    counts = settlement_run(now=NOW)
    # then it settles exactly what was left, and every item is settled exactly once (the
    # ledger and the one-link-per-item rules are checked after the test)
    assert counts["settled_items"] == (total_rewards - after_kill) + (150 - credits_after_kill)
    assert settled_rewards() == total_rewards
    assert SettlementItem.objects.filter(reward__isnull=False).count() == total_rewards
    assert SettlementItem.objects.filter(prize_credit__isnull=False).count() == 150


class PaidThenKilled(WalletPayout):
    """An external service that pays (appends the request to PAID_LOG), after which the worker is
    SIGKILLed before it can record anything (REFERRAL_PAYOUT_CHANNEL in the subprocess)."""

    leaves_platform = True

    def pay(self, payout: Payout, *, now) -> str:
        with open(os.environ["PAID_LOG"], "a") as log:
            log.write(json.dumps({"key": payout.key, "items": list(payout.items)}) + "\n")
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class Recording(WalletPayout):
    leaves_platform = True

    def __init__(self) -> None:
        self.sent: list[Payout] = []

    def pay(self, payout: Payout, *, now) -> str:
        self.sent.append(payout)
        return f"ext:{payout.key}"


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_paid_then_sigkilled_before_recording_is_resent_with_the_same_key(tmp_path):
    # given pending rewards and credits for a few players
    with connection.cursor() as cursor:
        cursor.execute(SEED, {"now": NOW, "players": 4, "per_player": 3, "credits": 2})
    paid_log = tmp_path / "paid.jsonl"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REFERRAL_PAYOUT_CHANNEL": "tests.referrals.test_settlement_crash.PaidThenKilled",
        "PAID_LOG": str(paid_log),
    }
    # when the external service paid the first settlement and the settler was SIGKILLed
    settler = subprocess.run(
        [sys.executable, "-c", SETTLER], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert settler.returncode == -signal.SIGKILL, settler.stderr.decode()[-2000:]
    [paid] = [json.loads(line) for line in paid_log.read_text().splitlines()]
    # and a new reward arrived for that player before the rerun
    player_id = Settlement.objects.get(payout_key=paid["key"]).player_id
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO referrals_referralreward (session_id, tier, beneficiary_id, event_at, "
            "base_amount, rate, amount, status, created_at) "
            "SELECT id, 2, %s, %s, 1.37, 0.05, 0.07, 'pending', %s FROM games_gamesession "
            "ORDER BY id LIMIT 1",
            [player_id, NOW, NOW],
        )
    # when the run is redelivered
    channel = Recording()
    counts = settlement_run(now=NOW, channel=channel)
    # then it first re-sent that settlement with the same key and items
    first = channel.sent[0]
    assert (first.key, list(first.items)) == (paid["key"], paid["items"])
    assert counts["resumed_settlements"] == 4  # the whole batch was claimed, one was paid
    # and no item went out under a second key; everything is settled once
    keys_by_item: dict[str, set[str]] = {}
    for payout in channel.sent:
        for item in payout.items:
            keys_by_item.setdefault(item, set()).add(payout.key)
    for item in paid["items"]:
        keys_by_item.setdefault(item, set()).add(paid["key"])
    assert all(len(keys) == 1 for keys in keys_by_item.values()), keys_by_item
    assert not ReferralReward.objects.filter(status="pending").exists()
    assert SettlementItem.objects.count() == ReferralReward.objects.count() + 2
    assert Settlement.objects.get(payout_key=paid["key"]).status == "paid"
    external = LedgerEntry.objects.filter(account=Account.PAYOUT_EXTERNAL)
    total = sum(r.amount for r in ReferralReward.objects.all()) + 2 * Decimal("9.99")
    assert sum(e.amount for e in external) == total
