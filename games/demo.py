"""Demo data for the games app: players, sessions, boards and prize pools (called by the
project's `manage.py seed_demo`, which seeds every app in turn).

Rows go in with PostgreSQL COPY (sessions in chunks, with a progress bar); boards are built from
the sessions by set-based SQL; pool amounts are the entry-fee shares summed with the one money
rule (games.money). Past pools are left open on purpose: the next prize-pool-finalisation run
finalises them, so a fresh demo shows the job doing real work. Same seed and `until`, same data.
~1M sessions take well under a minute on a laptop.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection

from games import conf
from games.management.progress import ProgressBar
from games.models import Game, Player
from games.money import ZERO, split
from games.periods import period_start
from games.services.boards import ENTRY_TABLE, SESSION_TABLE
from games.services.pools import prize_pool_add

CHUNK = 50_000
FEES = [Decimal("0.00"), Decimal("0.50"), Decimal("1.00"), Decimal("2.00")]
FEE_WEIGHTS = [50, 25, 15, 10]
# Typical score ranges per game (a lognormal around these medians looks like real play).
SCORE_MEDIAN = {
    "snake": 300,
    "tetris": 4000,
    "pong": 8,
    "breakout": 200,
    "space_invaders": 1500,
}


@dataclass(frozen=True)
class GamesSeeded:
    player_ids: list[int]
    board_entries: int
    pools: int


def seed_games(
    *, players: int, sessions: int, days: int, seed: int, rng: random.Random, until: dt.datetime
) -> GamesSeeded:
    """Players, their sessions over `days` up to `until`, boards and pools. Call inside a
    transaction; ranking the current boards is left to the caller (after the other apps')."""
    player_ids = _players(players, seed, until)
    amounts = _sessions(rng, player_ids, sessions, days, until)
    return GamesSeeded(player_ids, _boards(), _pools(amounts))


def _copy(table: str, columns: list[str], rows: Any, bar: ProgressBar) -> None:
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for count, row in enumerate(rows, 1):
            copy.write_row(row)
            if count % CHUNK == 0:
                bar.advance(CHUNK)
    bar.advance(count % CHUNK)


def _players(count: int, seed: int, until: dt.datetime) -> list[int]:
    start = Player.objects.order_by("-id").values_list("id", flat=True).first() or 0
    rows = [
        (
            f"demo-{seed}-{start + i}",
            f"0x{random.Random(seed * 7919 + i).getrandbits(160):040x}",
            until,
        )
        for i in range(count)
    ]
    with ProgressBar("players", count) as bar:
        _copy(Player._meta.db_table, ["handle", "wallet_address", "created_at"], rows, bar)
    return list(
        Player.objects.filter(handle__startswith=f"demo-{seed}-")
        .order_by("id")
        .values_list("id", flat=True)
    )


def _sessions(
    rng: random.Random, players: list[int], count: int, days: int, until: dt.datetime
) -> dict[tuple[str, str, dt.date], Decimal]:
    """The sessions, COPYed; returns the entry-fee shares each pool receives."""
    share = conf.load().daily_pool_share_percent
    amounts: dict[tuple[str, str, dt.date], Decimal] = defaultdict(lambda: ZERO)
    span = days * 86_400
    games = Game.values
    # A few players play most games, as in real arcades.
    weights = [1 / (i + 1) ** 0.6 for i in range(len(players))]
    chosen_players = rng.choices(players, weights=weights, k=count)

    def rows() -> Any:
        for player_id in chosen_players:
            game = rng.choice(games)
            fee = rng.choices(FEES, FEE_WEIGHTS)[0]
            started = until - dt.timedelta(seconds=rng.randrange(span))
            score = int(rng.lognormvariate(0, 0.8) * SCORE_MEDIAN[game])
            minutes = rng.uniform(1, 9)
            finished = started + dt.timedelta(minutes=minutes)
            roll = rng.random()
            if finished > until or roll < 0.04:
                # still running, or abandoned: expired by cleanup later
                status = "active" if finished > until else "expired"
                yield (player_id, game, status, fee, score, started, None, None)
                continue
            daily, weekly = split(fee, share_percent=share)
            if fee:
                amounts[(game, "daily", period_start("daily", finished))] += daily
                amounts[(game, "weekly", period_start("weekly", finished))] += weekly
            yield (player_id, game, "finished", fee, score, started, finished, finished)

    columns = [
        "player_id",
        "game",
        "status",
        "entry_fee",
        "score",
        "started_at",
        "finished_at",
        "last_score_at",
    ]
    with ProgressBar("sessions", count) as bar:
        _copy(SESSION_TABLE, columns, rows(), bar)
    return amounts


def _boards() -> int:
    """Each player's best finished session per board, in board order, set-based."""
    period_sql = {
        "daily": "(s.finished_at AT TIME ZONE 'UTC')::date",
        "weekly": "date_trunc('week', s.finished_at AT TIME ZONE 'UTC')::date",
        "all_time": "DATE '2000-01-01'",
    }
    total = 0
    with ProgressBar("boards", 3) as bar, connection.cursor() as cursor:
        for period, start_sql in period_sql.items():
            cursor.execute(
                f"""INSERT INTO {ENTRY_TABLE}
                        (player_id, game, period, period_start, score, achieved_at,
                         session_id)
                    SELECT DISTINCT ON (s.player_id, s.game, {start_sql})
                           s.player_id, s.game, %s, {start_sql}, s.score, s.finished_at, s.id
                    FROM {SESSION_TABLE} s
                    WHERE s.status = 'finished' AND s.voided_at IS NULL
                    ORDER BY s.player_id, s.game, {start_sql}, s.score DESC,
                             s.finished_at, s.id
                    ON CONFLICT (player_id, game, period, period_start) DO NOTHING""",  # noqa: S608
                [period],
            )
            total += cursor.rowcount
            bar.advance()
    return total


def _pools(amounts: dict[tuple[str, str, dt.date], Decimal]) -> int:
    """Through the service, so a second seeding adds to open pools and skips closed ones."""
    for (game, period, start), amount in sorted(amounts.items()):
        prize_pool_add(game=game, period=period, period_start=start, amount=amount)
    return len(amounts)
