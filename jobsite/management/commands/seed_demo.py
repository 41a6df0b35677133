"""`manage.py seed_demo`: demo data for the whole platform, each app seeding its own.

The project calls each app's seeder in turn (games: players, sessions, boards, pools; referrals:
a referral forest among those players and its rewards), in one transaction, then ranks the
current boards once. Same --seed and --until, same data.
"""

from __future__ import annotations

import random
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from games.demo import seed_games
from games.models import Player
from games.services import leaderboard_rank_all
from referrals.demo import seed_referrals


class Command(BaseCommand):
    help = "Create demo players, sessions, leaderboards, prize pools and referrals."

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
            games = seed_games(
                players=options["players"],
                sessions=options["sessions"],
                days=options["days"],
                seed=options["seed"],
                rng=rng,
                until=until,
            )
            referrals = seed_referrals(players=games.player_ids, rng=rng)
        ranked = leaderboard_rank_all(now=until)
        self.stdout.write(
            self.style.SUCCESS(
                f"seeded {len(games.player_ids):,} players, {options['sessions']:,} sessions, "
                f"{games.board_entries:,} board entries, {games.pools:,} pools, "
                f"{referrals:,} referrals; {ranked['rows_written']:,} current ranks written"
            )
        )
