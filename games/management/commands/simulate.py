"""`manage.py simulate`: keep playing games so a running stack shows the jobs doing real work.

Each simulated game goes through the services like a real client: start (with an entry fee),
a few score reports, then finish. Some games are abandoned without a score (cleanup expires them)
and some stop reporting after a score (the stuck-session finisher closes them). After some games
the player predicts who wins that game's open daily pool (`prediction_place`; prediction-matcher
settles it once the pool is finalised). Runs until Ctrl-C or --duration.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection
from django.utils import timezone

from games.models import Game, LeaderboardEntry, Player, PrizePool
from games.periods import period_start
from games.services import (
    PredictionError,
    game_session_finish,
    game_session_report_score,
    game_session_start,
    player_create,
    prediction_place,
)

FEES = [Decimal("0.00"), Decimal("0.50"), Decimal("1.00"), Decimal("2.00")]


class Command(BaseCommand):
    help = "Play games continuously (start, report scores, finish) through the games services."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=2.0, help="games per second (2)")
        parser.add_argument(
            "--duration", type=float, default=0, help="stop after this many seconds (0: never)"
        )
        parser.add_argument("--players", type=int, default=50, help="players to create if none")
        parser.add_argument(
            "--abandon", type=float, default=0.05, help="share of games never finished (0.05)"
        )
        parser.add_argument(
            "--stuck", type=float, default=0.03, help="share of games that stop after a score"
        )
        parser.add_argument(
            "--predict", type=float, default=0.1, help="share of games followed by a prediction"
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rate"] <= 0:
            raise CommandError("--rate must be positive")
        rng = random.Random(options["seed"])
        players = list(Player.objects.values_list("id", flat=True)[:10_000])
        if not players:
            players = [
                player_create(handle=f"sim-{rng.getrandbits(40):010x}").pk
                for _ in range(options["players"])
            ]
        interval = 1 / options["rate"]
        deadline = time.monotonic() + options["duration"] if options["duration"] else None
        counts = {"finished": 0, "abandoned": 0, "stuck": 0}
        predicted = 0
        self.stdout.write(
            f"simulating {options['rate']} games/s with {len(players)} players; Ctrl-C stops"
        )
        try:
            while deadline is None or time.monotonic() < deadline:
                tick = time.monotonic()
                outcome, game, player_id = self._play(rng, players, options)
                counts[outcome] += 1
                if rng.random() < options["predict"]:
                    predicted += self._predict(rng, players, game, player_id)
                if not connection.in_atomic_block:  # (tests wrap the command in a transaction)
                    close_old_connections()  # a long-running loop must not keep a dead connection
                time.sleep(max(0.0, interval - (time.monotonic() - tick)))
        except KeyboardInterrupt:
            self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(
                f"played {sum(counts.values())} games: {counts['finished']} finished, "
                f"{counts['abandoned']} abandoned, {counts['stuck']} stuck; "
                f"{predicted} predictions"
            )
        )

    def _predict(self, rng: random.Random, players: list[int], game: str, player_id: int) -> int:
        """The player predicts today's daily pool of `game`: mostly the board's current leader."""
        now = timezone.now()
        start = period_start("daily", now)
        pool_id = (
            PrizePool.objects.filter(game=game, period="daily", period_start=start, status="open")
            .values_list("pk", flat=True)
            .first()
        )
        if pool_id is None:
            return 0
        leader = (
            LeaderboardEntry.objects.filter(game=game, period="daily", period_start=start)
            .order_by("-score", "achieved_at", "id")
            .values_list("player_id", flat=True)
            .first()
        )
        guess = leader if leader is not None and rng.random() < 0.7 else rng.choice(players)
        try:
            prediction_place(
                player_id=player_id, pool_id=pool_id, predicted_winner_id=guess, now=now
            )
        except PredictionError:  # already predicted this pool, or the day just ended
            return 0
        return 1

    def _play(
        self, rng: random.Random, players: list[int], options: dict[str, Any]
    ) -> tuple[str, str, int]:
        """One game; returns (outcome, game, player)."""
        player_id = rng.choice(players)
        game = rng.choice(Game.values)
        session = game_session_start(
            player_id=player_id,
            game=game,
            entry_fee=rng.choices(FEES, [50, 25, 15, 10])[0],
        )
        roll = rng.random()
        if roll < options["abandon"]:
            return "abandoned", game, player_id
        score = 0
        for _ in range(rng.randint(1, 4)):
            score += rng.randint(1, 500)
            game_session_report_score(session_id=session.pk, score=score)
        if roll < options["abandon"] + options["stuck"]:
            return "stuck", game, player_id
        game_session_finish(session_id=session.pk, score=score + rng.randint(0, 100))
        return "finished", game, player_id
