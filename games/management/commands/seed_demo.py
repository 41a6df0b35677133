"""`manage.py seed_demo`: realistic players, sessions, boards and pools, fast and repeatable.

Rows go in with PostgreSQL COPY (sessions in chunks, with a progress bar); boards are built from
the sessions by set-based SQL; pool amounts are the entry-fee shares summed with the one money
rule (games.money). Past pools are left open on purpose: the next prize-pool-finalisation run
finalises them, so a fresh demo shows the job doing real work. Same --seed and --until, same data.
~1M sessions take well under a minute on a laptop.
"""

from __future__ import annotations

import datetime as dt
import importlib
import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from games import conf
from games.management.progress import ProgressBar
from games.models import Game, Player
from games.money import ZERO, split
from games.periods import period_start
from games.services import leaderboard_rank_all
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


class Command(BaseCommand):
    help = "Create demo players, sessions, leaderboards and prize pools (and referrals)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--players", type=int, default=1_000, help="players (1,000)")
        parser.add_argument("--sessions", type=int, default=20_000, help="sessions (20,000)")
        parser.add_argument("--days", type=int, default=14, help="days of history (14)")
        parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
        parser.add_argument(
            "--until", help="ISO moment the history ends (default: now); fix it to repeat data"
        )
        parser.add_argument(
            "--if-empty", action="store_true", help="do nothing if any player exists"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_empty"] and Player.objects.exists():
            self.stdout.write("players exist; --if-empty: nothing seeded")
            return
        if options["players"] < 1 or options["sessions"] < 0 or options["days"] < 1:
            raise CommandError("--players >= 1, --sessions >= 0 and --days >= 1 are required")
        until = timezone.now().replace(microsecond=0)
        if options["until"]:
            parsed = parse_datetime(options["until"])
            if parsed is None or parsed.tzinfo is None:
                raise CommandError("--until must be an ISO datetime with a timezone")
            until = parsed
        rng = random.Random(options["seed"])
        with transaction.atomic():
            player_ids = self._players(options["players"], options["seed"], until)
            self._sessions(rng, player_ids, options["sessions"], options["days"], until)
            boards = self._boards()
            pools = self._pools(until)
            referrals = self._referrals(player_ids, rng)
        ranked = leaderboard_rank_all(now=until)
        self.stdout.write(
            self.style.SUCCESS(
                f"seeded {len(player_ids):,} players, {options['sessions']:,} sessions, "
                f"{boards:,} board entries, {pools:,} pools, {referrals:,} referrals; "
                f"{ranked['rows_written']:,} current ranks written"
            )
        )

    def _copy(self, table: str, columns: list[str], rows: Any, bar: ProgressBar) -> None:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        count = 0
        with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
            for count, row in enumerate(rows, 1):
                copy.write_row(row)
                if count % CHUNK == 0:
                    bar.advance(CHUNK)
        bar.advance(count % CHUNK)

    def _players(self, count: int, seed: int, until: dt.datetime) -> list[int]:
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
            self._copy(Player._meta.db_table, ["handle", "wallet_address", "created_at"], rows, bar)
        return list(
            Player.objects.filter(handle__startswith=f"demo-{seed}-")
            .order_by("id")
            .values_list("id", flat=True)
        )

    def _sessions(
        self, rng: random.Random, players: list[int], count: int, days: int, until: dt.datetime
    ) -> None:
        share = conf.load().daily_pool_share_percent
        self.pool_amounts: dict[tuple[str, str, dt.date], Decimal] = defaultdict(lambda: ZERO)
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
                    self.pool_amounts[(game, "daily", period_start("daily", finished))] += daily
                    self.pool_amounts[(game, "weekly", period_start("weekly", finished))] += weekly
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
            self._copy(SESSION_TABLE, columns, rows(), bar)

    def _boards(self) -> int:
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

    def _pools(self, until: dt.datetime) -> int:
        """Through the service, so a second seeding adds to open pools and skips closed ones."""
        for (game, period, start), amount in sorted(self.pool_amounts.items()):
            prize_pool_add(game=game, period=period, period_start=start, amount=amount)
        return len(self.pool_amounts)

    def _referrals(self, players: list[int], rng: random.Random) -> int:
        """Call the referrals app's seeder when it is installed and provides one."""
        if not apps.is_installed("referrals"):
            return 0
        try:
            demo = importlib.import_module("referrals.demo")
        except ModuleNotFoundError:
            return 0
        seed_referrals = getattr(demo, "seed_referrals", None)
        if seed_referrals is None:
            return 0
        return int(seed_referrals(players=players, rng=rng))
