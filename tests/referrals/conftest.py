from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.db import connection, connections

from games.models import GameSession, Player, PrizeCredit, PrizePool
from games.services import game_session_finish, game_session_start, player_create
from referrals.models import (
    Account,
    LedgerEntry,
    RewardStatus,
    Settlement,
    SettlementItem,
    SettlementStatus,
)
from referrals.selectors import ledger_unbalanced_transactions
from referrals.services import referral_create
from scheduler.budget import Budget

# Referral links are made at the start of the test world, long before any session.
LINKED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(*args: int) -> dt.datetime:
    """An aware UTC moment: at(2026, 3, 2, 23, 59)."""
    return dt.datetime(*args, tzinfo=dt.UTC)


def assert_ledger_consistent() -> None:
    """The money invariants, checked after every scenario that touched the database:

    - every ledger transaction has entries and sums to zero; all accounts together sum to zero;
    - a paid settlement's total equals its items' sum and its wallet credit; a sending one (its
      payout's outcome not recorded yet) has its items but no ledger transaction; a failed one
      has no items and no ledger transaction;
    - a reward is settled if and only if it has a settlement item (unique link) in a paid
      settlement, whose amount is the reward's; a pending reward's item, if any, is in a sending
      one;
    - what the referral-expense and prize-pool accounts paid equals what the items say.
    """
    assert ledger_unbalanced_transactions() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(amount), 0) FROM referrals_ledgerentry")
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            """
            SELECT s.id FROM referrals_settlement s
            LEFT JOIN referrals_settlementitem i ON i.settlement_id = s.id
            GROUP BY s.id, s.total, s.status, s.item_count
            HAVING (s.status IN ('paid', 'sending')
                    AND (s.total <> coalesce(sum(i.amount), 0) OR s.item_count <> count(i.id)))
                OR (s.status = 'failed' AND count(i.id) > 0)
            """
        )
        assert cursor.fetchall() == [], "settlement totals differ from their items"
        cursor.execute(
            """
            SELECT s.id FROM referrals_settlement s
            LEFT JOIN referrals_ledgertransaction t ON t.settlement_id = s.id
            LEFT JOIN referrals_ledgerentry e
                   ON e.transaction_id = t.id AND e.account = 'player_wallet' AND e.amount > 0
            GROUP BY s.id, s.total, s.status
            HAVING (s.status = 'paid' AND coalesce(sum(e.amount), 0) <> s.total)
                OR (s.status IN ('failed', 'sending') AND count(t.id) > 0)
            """
        )
        assert cursor.fetchall() == [], "settlement totals differ from their wallet credits"
        cursor.execute(
            """
            SELECT r.id FROM referrals_referralreward r
            LEFT JOIN referrals_settlementitem i ON i.reward_id = r.id
            LEFT JOIN referrals_settlement s ON s.id = i.settlement_id
            WHERE (r.status = 'settled') <> (i.id IS NOT NULL AND s.status = 'paid')
               OR (i.id IS NOT NULL AND (i.amount <> r.amount OR s.status = 'failed'
                                         OR s.player_id <> r.beneficiary_id))
            """
        )
        assert cursor.fetchall() == [], "rewards whose status and settlement link disagree"
    paid_items = SettlementItem.objects.filter(settlement__status=SettlementStatus.PAID)
    reward_items = sum((i.amount for i in paid_items.filter(reward__isnull=False)), Decimal(0))
    credit_items = sum(
        (i.amount for i in paid_items.filter(prize_credit__isnull=False)), Decimal(0)
    )
    expense = sum(
        (e.amount for e in LedgerEntry.objects.filter(account=Account.REFERRAL_EXPENSE)),
        Decimal(0),
    )
    pools = sum(
        (e.amount for e in LedgerEntry.objects.filter(account=Account.PRIZE_POOL)), Decimal(0)
    )
    assert (-expense, -pools) == (reward_items, credit_items)
    assert not Settlement.objects.filter(status=SettlementStatus.PAID, error__gt="").exists()
    assert RewardStatus.values == ["pending", "settled"]


@pytest.fixture(autouse=True)
def _ledger_checked_after_each_scenario(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if request.node.get_closest_marker("django_db") is not None:
        assert_ledger_consistent()


@pytest.fixture
def make_player() -> Callable[..., Player]:
    counter = iter(range(1, 10**9))

    def make(handle: str | None = None, wallet: str = "0xwallet") -> Player:
        return player_create(handle=handle or f"ref-player-{next(counter)}", wallet_address=wallet)

    return make


@pytest.fixture
def chain(make_player: Callable[..., Player]) -> Callable[[int], list[Player]]:
    """chain(n): n players, each referred by the one before: [top, ..., bottom]."""

    def build(n: int) -> list[Player]:
        players = [make_player() for _ in range(n)]
        for referrer, referee in itertools.pairwise(players):
            referral_create(referrer_id=referrer.pk, referee_id=referee.pk, now=LINKED_AT)
        return players

    return build


@pytest.fixture
def play() -> Callable[..., GameSession]:
    """play(player, fee="1.00", when=at(...)): start and finish one session."""

    def run(
        player: Player, *, fee: str | Decimal = "1.00", when: dt.datetime | None = None
    ) -> GameSession:
        when = when or at(2026, 3, 4, 10)
        session = game_session_start(
            player_id=player.pk, game="snake", entry_fee=fee, now=when - dt.timedelta(minutes=5)
        )
        return game_session_finish(session_id=session.pk, score=10, now=when)

    return run


def run_concurrently(*workers: Callable[[], Any]) -> list[Any]:
    """Start each worker in its own thread (own database connection) at the same moment.

    Returns each worker's result, or the exception it raised.
    """
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def wrap(index: int, work: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work()
        except Exception as exc:  # the caller asserts on it
            results[index] = exc
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=wrap, args=(i, w), daemon=True) for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture
def make_credit() -> Callable[..., PrizeCredit]:
    """make_credit(player, "12.50"): a finalised daily pool won by `player`, with its credit."""
    days = iter(range(10_000))

    def make(player: Player, amount: str | Decimal) -> PrizeCredit:
        day = dt.date(2025, 1, 1) + dt.timedelta(days=next(days))
        moment = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=1)
        pool = PrizePool.objects.create(
            game="pong",
            period="daily",
            period_start=day,
            amount=amount,
            status=PrizePool.Status.FINALISED,
            winner=player,
            winning_score=1,
            finalised_at=moment,
        )
        return PrizeCredit.objects.create(
            pool=pool, player=player, amount=amount, created_at=moment
        )

    return make


class PayoutService:
    """A real HTTP payout service on localhost for the webhook channel: answers with `status`."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0  # seconds to wait before answering (after recording the request)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                service.requests.append((headers, body))
                time.sleep(service.delay)
                answer = (
                    json.dumps({"reference": f"ext-{len(service.requests)}"})
                    if service.status == 200
                    else "payout provider is down"
                ).encode()
                try:
                    self.send_response(service.status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/payouts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def payout_service() -> Iterator[PayoutService]:
    service = PayoutService()
    yield service
    service.server.shutdown()
    service.server.server_close()


class StopAfter(Budget):
    """A run's budget that is spent after `checks` looks: stops a run at an exact point, where a
    clock-based budget would depend on the machine's speed."""

    def __init__(self, checks: int) -> None:
        super().__init__(seconds=math.inf)
        self.left = checks

    @property
    def spent(self) -> bool:
        self.left -= 1
        return self.left < 0


def fail_writes(table: str, condition: str, message: str = "numeric field overflow") -> None:
    """From here to the end of the test, inserting a row of `table` for which the SQL `condition`
    (on NEW) holds fails like a numeric overflow (SQLSTATE 22003): one unprocessable row written
    by hand, without changing the code under test. Rolled back with the test's transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE OR REPLACE FUNCTION test_fail_writes() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {condition} THEN
                    RAISE EXCEPTION '{message}' USING ERRCODE = '22003';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_fail_writes BEFORE INSERT ON {table}
                FOR EACH ROW EXECUTE FUNCTION test_fail_writes();
            """
        )


def stop_failing_writes(table: str) -> None:
    """Staff repaired the data: the rows written by `fail_writes` are accepted again."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER test_fail_writes ON {table}")
