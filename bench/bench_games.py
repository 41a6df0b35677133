"""Game jobs on a million rows: our services against hand-written SQL, side by side in one run.

    python -m bench games [--rows N] [--rounds N] [--repeat N] [--cleanup-rounds N]
                          [--sample N] [--seed N] [--only PART]

Ranking: N leaderboard entries over the 15 current boards (5 games x daily, weekly, all-time).
- ours (`leaderboard_rank_all`) vs the single hand-written UPDATE ... FROM (SELECT ... RANK()
  OVER ...), in --rounds interleaved rounds (ours first in even rounds, hand-written first in odd
  ones). Before each side: all ranks set NULL, VACUUM (ANALYZE), CHECKPOINT, so both start from
  the same table (fillfactor 50), the same statistics, a warm cache and no dirty pages; autovacuum
  is off on the table meanwhile (the explicit VACUUM stands in for it), so it starts under
  neither side. A first, unreported pass of each side warms up. Reported: the median of the
  per-round ratios, and their range;
- `bulk_update` of ranks computed in Python and per-row `save()`: measured on a SAMPLE of
  `--sample` rows and extrapolated linearly to N (a full run would take tens of minutes);
- a second run with nothing changed vs the hand-written statement with IS DISTINCT FROM
  (3 interleaved rounds; neither writes);
- 1 % of one board's scores changed vs the full re-rank.
Finalisation: the ten pools (5 daily + 5 weekly) of those boards on Monday at 00:00:50, database
time (sum of statement times), median of --repeat rounds: in production order (changes in the
last hour, then `leaderboard-ranking` at 00:00:20), with the boards untouched since the last
ranking, and the worst case (changes, no ranking ran); plus the 00:00:20 ranking's wall time.
Cleanup: N expired sessions without money (30 % of them with a board entry) vs one plain DELETE,
each on freshly truncated and seeded tables after a CHECKPOINT (--cleanup-rounds, alternating
which goes first), and the longest batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench._env import servers
from devtools.gendocs import Block, table

# The last hourly ranking of a week (a Sunday), then Monday's runs: ranking at 00:00:20 and
# finalisation (daily and weekly pools) at 00:00:50.
NOW = dt.datetime(2026, 3, 8, 23, 0, 20, tzinfo=dt.UTC)
RANKING_AFTER_MIDNIGHT = dt.datetime(2026, 3, 9, 0, 0, 20, tzinfo=dt.UTC)
AFTER_WEEK = dt.datetime(2026, 3, 9, 0, 0, 50, tzinfo=dt.UTC)


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def sql(statement: str, params: list[Any] | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.rowcount


def vacuum(table: str) -> None:
    sql(f"VACUUM (ANALYZE) {table}")


def checkpoint() -> None:
    """Write out dirty pages now, so the next measured statement does not pay for the last one's
    (a checkpoint due to max_wal_size or its timeout would land on whichever side runs then)."""
    sql("CHECKPOINT")


def ratio_summary(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"


HAND_WRITTEN = """
UPDATE games_leaderboardentry e SET rank = r.new_rank
FROM (SELECT id, RANK() OVER (PARTITION BY game, period, period_start
                               ORDER BY score DESC, achieved_at, id) AS new_rank
      FROM games_leaderboardentry) r
WHERE e.id = r.id {distinct}
"""


def seed_boards(rows: int, seed: int) -> None:
    """rows // 15 players, each with an entry on each of the 15 current boards; scores 0..9999
    (many ties), achieved_at on the board's first day in whole seconds (ties there too)."""
    from games.models import Game
    from games.periods import current_boards

    players = rows // 15
    sql("SELECT setseed(%s)", [seed / 2**31])
    sql(
        "INSERT INTO games_player (handle, wallet_address, created_at) "
        "SELECT 'bench-' || g, '', now() FROM generate_series(1, %s) g",
        [players],
    )
    boards = [
        (game, period, start) for game in Game.values for period, start in current_boards(NOW)
    ]
    for game, period, start in boards:
        sql(
            """INSERT INTO games_leaderboardentry
                   (player_id, game, period, period_start, score, achieved_at)
               SELECT p.id, %s, %s, %s, floor(random() * 10000)::int,
                      %s::timestamptz - make_interval(secs => floor(random() * 36000))
               FROM games_player p WHERE p.handle LIKE 'bench-%%'""",
            [game, period, start, NOW],
        )
    vacuum("games_leaderboardentry")


def bench_ranking(
    rows: int, sample: int, seed: int, rounds: int, table: list[tuple[str, str]]
) -> None:
    from django.db import connection

    from games.models import LeaderboardEntry
    from games.services import leaderboard_rank_all

    t0, _ = timed(lambda: seed_boards(rows, seed))
    total = LeaderboardEntry.objects.count()
    print(f"seeded {total:,} entries on 15 boards in {t0:.1f} s", flush=True)

    def reset() -> None:
        sql("UPDATE games_leaderboardentry SET rank = NULL")
        vacuum("games_leaderboardentry")
        checkpoint()

    def ours_side() -> float:
        seconds, counts = timed(lambda: leaderboard_rank_all(now=NOW))
        assert counts["rows_written"] == total, (counts, total)
        return seconds

    def hand_side() -> float:
        seconds, written = timed(lambda: sql(HAND_WRITTEN.format(distinct="")))
        assert written == total, (written, total)
        return seconds

    # Full ranking from NULL, interleaved: each side from the same reset state.
    ours_times: list[float] = []
    hand_times: list[float] = []
    rss_before = rss_mb()
    sql("ALTER TABLE games_leaderboardentry SET (autovacuum_enabled = false)")
    try:
        # An unreported first pass of each side: the first full ranking after seeding ran up to
        # 1.8x slower than the later ones of the same side, seen on both sides.
        for side in (ours_side, hand_side):
            reset()
            side()
        for round_no in range(rounds):
            sides = [("ours", ours_side), ("hand", hand_side)]
            if round_no % 2:
                sides.reverse()
            times = {}
            for name, side in sides:
                reset()
                times[name] = side()
            ours_times.append(times["ours"])
            hand_times.append(times["hand"])
            print(
                f"ranking round {round_no + 1}/{rounds} ({sides[0][0]} first): ours "
                f"{times['ours']:.1f} s, hand-written {times['hand']:.1f} s, "
                f"{times['ours'] / times['hand']:.2f}x",
                flush=True,
            )
    finally:
        sql("ALTER TABLE games_leaderboardentry RESET (autovacuum_enabled)")
    rss_after = rss_mb()
    ours = statistics.median(ours_times)
    hand = statistics.median(hand_times)
    ratios = [o / h for o, h in zip(ours_times, hand_times, strict=True)]
    table.append(
        (
            f"rank all, ours vs hand-written UPDATE ({rounds} interleaved rounds)",
            f"{ratio_summary(ratios)}; medians {ours:.1f} s vs {hand:.1f} s; target <= 1.2",
        )
    )
    table.append(("  worker peak RSS growth during the rounds", f"{rss_after - rss_before:.0f} MB"))

    # Nothing changed (ranks as the last round left them): ours vs the hand-written statement
    # with IS DISTINCT FROM; neither writes, so the rounds need no reset.
    vacuum("games_leaderboardentry")
    nc_ours: list[float] = []
    nc_hand: list[float] = []

    def ours_unchanged() -> None:
        seconds, counts = timed(lambda: leaderboard_rank_all(now=NOW))
        assert counts["rows_written"] == 0, counts
        nc_ours.append(seconds)

    def hand_unchanged() -> None:
        distinct = "AND e.rank IS DISTINCT FROM r.new_rank"
        seconds, written = timed(lambda: sql(HAND_WRITTEN.format(distinct=distinct)))
        assert written == 0, written
        nc_hand.append(seconds)

    unchanged = [ours_unchanged, hand_unchanged]
    for round_no in range(3):
        for side in unchanged[::-1] if round_no % 2 else unchanged:
            side()
    nc_ratios = [o / h for o, h in zip(nc_ours, nc_hand, strict=True)]
    table.append(
        (
            "no-change run, ours vs hand-written IS DISTINCT FROM",
            f"{ratio_summary(nc_ratios)}; medians {statistics.median(nc_ours):.1f} s vs "
            f"{statistics.median(nc_hand):.1f} s, 0 rows",
        )
    )

    # 1 % of one board changes (a new best for 1 % of snake's daily players), then a run.
    board_rows = LeaderboardEntry.objects.filter(game="snake", period="daily").count()
    changed = sql(
        """UPDATE games_leaderboardentry SET score = score + 1 + floor(random() * 500)::int
           WHERE id IN (SELECT id FROM games_leaderboardentry
                        WHERE game = 'snake' AND period = 'daily'
                        ORDER BY random() LIMIT %s)""",
        [max(1, board_rows // 100)],
    )
    vacuum("games_leaderboardentry")
    partial, counts3 = timed(lambda: leaderboard_rank_all(now=NOW))
    table.append(
        (
            f"1% of one board changed ({changed:,} rows), vs full re-rank",
            f"{partial / ours:.2f}x  ({partial:.1f} s, {counts3['rows_written']:,} rows written)",
        )
    )

    # bulk_update of Python-computed ranks, and per-row save(): on a sample, extrapolated.
    sample_ids = list(
        LeaderboardEntry.objects.filter(game="pong", period="weekly")
        .order_by("id")
        .values_list("id", flat=True)[:sample]
    )
    reset()

    def python_bulk_update() -> int:
        entries = list(LeaderboardEntry.objects.filter(id__in=sample_ids))
        entries.sort(key=lambda e: (-e.score, e.achieved_at, e.pk))
        for position, entry in enumerate(entries, start=1):
            entry.rank = position
        LeaderboardEntry.objects.bulk_update(entries, ["rank"], batch_size=1000)
        return len(entries)

    bulk, done = timed(python_bulk_update)
    bulk_full = bulk * total / done
    table.append(
        (
            f"bulk_update of Python ranks (sample {done:,}, extrapolated)",
            f"{bulk_full / hand:.1f}x  (~{bulk_full:.0f} s)",
        )
    )
    save_sample = sample_ids[: max(1, sample // 4)]

    def per_row_save() -> int:
        for position, entry in enumerate(LeaderboardEntry.objects.filter(id__in=save_sample), 1):
            entry.rank = position
            entry.save(update_fields=["rank"])
        return len(save_sample)

    saved, done = timed(per_row_save)
    save_full = saved * total / done
    table.append(
        (
            f"per-row save() (sample {done:,}, extrapolated)",
            f"{save_full / hand:.1f}x  (~{save_full:.0f} s)",
        )
    )
    connection.close()


def seed_pool_history(days: int) -> int:
    """Closed pools of `days` earlier days (and their weeks), as a year of production leaves them:
    the ranking's query for open pools of ended periods must not read them."""
    from games.periods import period_start

    first = period_start("daily", NOW) - dt.timedelta(days=days)
    return sql(
        """INSERT INTO games_prizepool
               (game, period, period_start, amount, carried_in, status, finalised_at, created_at)
           SELECT g.game, p.period, d::date, 0, 0, 'no_winner', d + interval '1 day', d
           FROM unnest(ARRAY['snake','tetris','pong','breakout','space_invaders']) g(game),
                (VALUES ('daily'), ('weekly')) p(period),
                generate_series(%s::date, %s::date, interval '1 day') d
           WHERE p.period = 'daily' OR extract(isodow FROM d) = 1
           ON CONFLICT DO NOTHING""",
        [first, period_start("daily", NOW) - dt.timedelta(days=1)],
    )


def bench_finalisation(table: list[tuple[str, str]], repeat: int, rows: int, seed: int) -> None:
    """The ten pools (5 daily + 5 weekly) of the boards, finalised on Monday at 00:00:50.

    The production sequence: the hourly ranking at Sunday 23:00:20 (NOW) leaves the boards
    ranked; during the last hour 1 % of all entries get a better score (achieved before
    midnight); `leaderboard-ranking` runs at 00:00:20 (it ranks the current boards and the
    ended boards whose pool is still open); `prize-pool-finalisation` at 00:00:50. Three
    scenarios, side by side in each of `repeat` rounds (pools reopened, credits and notifications
    removed, a VACUUM before each as autovacuum would have run during the day; none between the
    changes and the jobs):
    - boards untouched since the ranking (the floor);
    - production: changes, ranking at 00:00:20, finalisation at 00:00:50;
    - worst case: changes, no ranking ran (late, failed): finalisation ranks the ten boards itself.
    Database time = the sum of the wall times of every statement the service sends (measured
    around each execute in the client, so it includes the round trips); medians are reported.
    Also: how many boards finalisation ranked itself, and the cost of the ranking's query for
    open pools of ended periods among two years of closed pools.
    """
    from django.db import connection

    import games.services.pools as pools_module
    import games.services.ranking as ranking_module
    from games.models import Game, LeaderboardEntry, Notification, PrizeCredit, PrizePool
    from games.periods import period_start
    from games.services import leaderboard_rank_all, prize_pool_finalise_due
    from games.services.ranking import ended_open_board_keys

    if not LeaderboardEntry.objects.exists():
        seed_boards(rows, seed)
    leaderboard_rank_all(now=NOW)  # as the hourly run at 23:00:20 leaves them
    ten = [
        PrizePool.objects.create(
            game=game, period=period, period_start=period_start(period, NOW), amount=100
        ).pk
        for game in Game.values
        for period in ("daily", "weekly")
    ]
    history = seed_pool_history(730)
    vacuum("games_prizepool")

    # The finalisation ranks a board itself only if it changed since its last ranking: count it.
    ranked_by_finalisation = [0]
    boards_rank = pools_module.boards_rank

    def counting_boards_rank(boards):  # type: ignore[no-untyped-def]
        ranked_by_finalisation[0] += len(boards)
        return boards_rank(boards)

    pools_module.boards_rank = counting_boards_rank
    # How long the ranking at 00:00:20 takes for the ended boards (done first, in its run).
    ended_seconds: list[float] = []
    ended_rank = ranking_module.ended_boards_rank

    def timed_ended_rank(boards):  # type: ignore[no-untyped-def]
        seconds, result = timed(lambda: ended_rank(boards))
        ended_seconds.append(seconds)
        return result

    ranking_module.ended_boards_rank = timed_ended_rank

    def reopen() -> None:
        Notification.objects.filter(kind="pool_won").delete()
        PrizeCredit.objects.all().delete()
        PrizePool.objects.filter(pk__in=ten).update(
            status="open", winner=None, winning_score=None, finalised_at=None
        )
        vacuum("games_leaderboardentry")

    def last_hour_changes() -> int:
        """1 % of all entries improve between 23:00:20 and midnight (unranked by the trigger)."""
        return sql(
            """UPDATE games_leaderboardentry
               SET score = score + 1 + floor(random() * 500)::int,
                   achieved_at = %s::timestamptz + make_interval(secs => floor(random() * 3500))
               WHERE random() < 0.01""",
            [NOW],
        )

    def finalise() -> tuple[float, int]:
        db_time = [0.0]

        def measure(execute, statement, params, many, context):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return execute(statement, params, many, context)
            finally:
                db_time[0] += time.perf_counter() - started

        ranked_by_finalisation[0] = 0
        with connection.execute_wrapper(measure):
            counts = prize_pool_finalise_due(now=AFTER_WEEK)
        assert counts["finalised"] == 10, counts
        return db_time[0], ranked_by_finalisation[0]

    untouched: list[float] = []
    production: list[float] = []
    ranking: list[float] = []
    ranking_ended: list[float] = []
    ranking_rows: list[int] = []
    worst: list[float] = []
    self_ranked = {"untouched": set(), "production": set(), "worst": set()}
    for _ in range(repeat):
        reopen()
        db, own = finalise()
        untouched.append(db)
        self_ranked["untouched"].add(own)

        reopen()
        last_hour_changes()
        ended_seconds.clear()
        wall, counts = timed(lambda: leaderboard_rank_all(now=RANKING_AFTER_MIDNIGHT))
        ranking_ended.append(sum(ended_seconds))
        assert counts["ended_boards"] == 10, counts
        assert counts["ended_boards_busy"] == 0, counts
        ranking.append(wall)
        ranking_rows.append(counts["rows_written"])
        db, own = finalise()
        production.append(db)
        self_ranked["production"].add(own)

        reopen()
        last_hour_changes()
        db, own = finalise()
        worst.append(db)
        self_ranked["worst"].add(own)
    pools_module.boards_rank = boards_rank
    ranking_module.ended_boards_rank = ended_rank

    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} s  (range {min(values):.2f}-{max(values):.2f} s"

    def own(kind: str) -> str:
        return "/".join(str(n) for n in sorted(self_ranked[kind]))

    table.append(
        (
            f"finalise 10 pools at 00:00:50, database time (median of {repeat}):",
            "target < 1 s",
        )
    )
    table.append(
        (
            "  production: last-hour changes, ranking ran at 00:00:20",
            f"{median(production)}; boards it ranked itself: {own('production')})",
        )
    )
    table.append(
        (
            "  boards untouched since the 23:00:20 ranking",
            f"{median(untouched)}; boards it ranked itself: {own('untouched')})",
        )
    )
    table.append(
        (
            "  worst case: last-hour changes, NO ranking ran before it",
            f"{median(worst)}; boards it ranked itself: {own('worst')})",
        )
    )
    table.append(
        (
            "ranking run at 00:00:20 (10 ended + 15 current boards), wall",
            f"{median(ranking)}; {statistics.median(ranking_rows):,.0f} rows written; budget 30 s)",
        )
    )
    table.append(
        (
            "  of which the 10 ended boards (ranked first, board by board)",
            f"{median(ranking_ended)}; finalisation starts 30 s after the run)",
        )
    )
    # The ranking's query for open pools of ended periods, among years of closed pools.
    reopen()
    lookups = [timed(lambda: ended_open_board_keys(RANKING_AFTER_MIDNIGHT))[0] for _ in range(20)]
    with connection.cursor() as cursor:
        query = PrizePool.objects.filter(
            status="open", period_start__lt=period_start("daily", RANKING_AFTER_MIDNIGHT)
        ).values_list("game", "period", "period_start")
        compiled, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}", params)
        plan = [line.strip() for (line,) in cursor.fetchall()]
    index_lines = [line for line in plan if "Index" in line] or plan
    table.append(
        (
            f"  its query for ended open pools, among {history:,} closed pools",
            f"{statistics.median(lookups) * 1000:.1f} ms median of 20; plan: {index_lines[0]}",
        )
    )


def seed_expired(rows: int) -> None:
    sql(
        "INSERT INTO games_player (handle, wallet_address, created_at) "
        "VALUES ('bench-cleanup', '', now()) ON CONFLICT DO NOTHING"
    )
    sql(
        """INSERT INTO games_gamesession (player_id, game, status, entry_fee, score, started_at)
           SELECT (SELECT id FROM games_player WHERE handle = 'bench-cleanup'),
                  (ARRAY['snake','tetris','pong','breakout','space_invaders'])[1 + g %% 5],
                  'expired', 0, 0, %s::timestamptz - make_interval(days => 60, secs => g)
           FROM generate_series(1, %s) g""",
        [NOW, rows],
    )
    # 30 % of them referenced by board entries, spread over 3000 old daily boards so that the
    # (player, board) key stays unique: entry n belongs to player n / 3000 on day n % 3000.
    sql(
        "INSERT INTO games_player (handle, wallet_address, created_at) "
        "SELECT 'bench-c-' || g, '', now() FROM generate_series(0, %s) g ON CONFLICT DO NOTHING",
        [rows // 3000 + 1],
    )
    sql(
        """INSERT INTO games_leaderboardentry
               (player_id, game, period, period_start, score, achieved_at, session_id)
           SELECT p.id, 'snake', 'daily', DATE '2015-01-01' + (s.n %% 3000)::int, 0,
                  s.started_at, s.id
           FROM (SELECT id, started_at, row_number() OVER (ORDER BY id) AS n
                 FROM games_gamesession WHERE status = 'expired') s
           JOIN games_player p ON p.handle = 'bench-c-' || (s.n / 3000)
           WHERE s.n %% 10 < 3""",
    )
    vacuum("games_gamesession")
    vacuum("games_leaderboardentry")


def bench_cleanup(rows: int, rounds: int, table: list[tuple[str, str]]) -> None:
    from django.db import connection, transaction

    from games.services import cleanup_run

    def seed() -> float:
        # Fresh tables for each side: after an earlier round's batched cleanup (and autovacuum
        # behind it) ours ran ~20 % slower on the reseeded table than on a fresh one, which the
        # side that came second would pay alone (one plain DELETE did not mind).
        sql("TRUNCATE games_leaderboardentry, games_gamesession CASCADE")
        seconds, _ = timed(lambda: seed_expired(rows))
        checkpoint()
        return seconds

    def plain_delete() -> int:
        with transaction.atomic():  # the COMMIT (deferred FK checks) is part of the cost
            return sql(
                "DELETE FROM games_gamesession WHERE status = 'expired' AND entry_fee = 0 "
                "AND started_at < %s",
                [NOW - dt.timedelta(days=30)],
            )

    def plain_side() -> float:
        seconds, deleted = timed(plain_delete)
        assert deleted == rows, deleted
        return seconds

    batches: list[int] = []
    longest: list[float] = []

    def ours_side() -> float:
        seconds, stats = timed(lambda: cleanup_run(now=NOW))
        assert stats["sessions_deleted"] == rows, stats
        batches.append(stats["batches"])
        longest.append(stats["longest_batch_ms"] / 1000)
        return seconds

    plain_times: list[float] = []
    ours_times: list[float] = []
    rss_before = rss_mb()
    for round_no in range(rounds):
        sides = [("plain", plain_side), ("ours", ours_side)]
        if round_no % 2:
            sides.reverse()
        times = {}
        for name, side in sides:
            seeded = seed()
            print(f"seeded {rows:,} expired sessions (+30% with entries) in {seeded:.1f} s")
            times[name] = side()
        plain_times.append(times["plain"])
        ours_times.append(times["ours"])
        print(
            f"cleanup round {round_no + 1}/{rounds} ({sides[0][0]} first): ours "
            f"{times['ours']:.1f} s ({batches[-1]} batches, longest {longest[-1]:.2f} s), "
            f"plain DELETE {times['plain']:.1f} s, {times['ours'] / times['plain']:.2f}x",
            flush=True,
        )
    rss_after = rss_mb()
    ratios = [o / p for o, p in zip(ours_times, plain_times, strict=True)]
    table.append(
        (
            f"cleanup of {rows:,} sessions, ours vs one plain DELETE ({rounds} rounds)",
            f"{ratio_summary(ratios)}; medians {statistics.median(ours_times):.1f} s vs "
            f"{statistics.median(plain_times):.1f} s, {max(batches)} batches; target <= 2",
        )
    )
    table.append(
        (
            "  longest single batch (statement + COMMIT)",
            f"{max(longest):.2f} s (per round: {', '.join(f'{s:.2f}' for s in longest)});"
            " target <= 1 s",
        )
    )
    table.append(("  worker peak RSS growth during ours", f"{rss_after - rss_before:.0f} MB"))
    connection.close()


def main(argv: list[str]) -> dict[str, list[Block]]:
    parser = argparse.ArgumentParser(prog="bench games", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="entries / sessions (1M)")
    parser.add_argument("--sample", type=int, default=20_000, help="rows for bulk_update/save")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved full-ranking rounds (5; ~45 s each at 1M)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="finalisation runs (5)")
    parser.add_argument(
        "--cleanup-rounds", type=int, default=1, help="cleanup rounds (1; ~3.5 min each at 1M)"
    )
    parser.add_argument(
        "--only",
        choices=["ranking", "finalisation", "cleanup"],
        help="one part (finalisation seeds the boards itself)",
    )
    args = parser.parse_args(argv)
    random.seed(args.seed)
    parts: dict[str, list[tuple[str, str]]] = {}
    with servers():
        if args.only in (None, "ranking"):
            bench_ranking(
                args.rows, args.sample, args.seed, args.rounds, parts.setdefault("ranking", [])
            )
        if args.only in (None, "finalisation"):
            bench_finalisation(
                parts.setdefault("finalisation", []), args.repeat, args.rows, args.seed
            )
        if args.only in (None, "cleanup"):
            bench_cleanup(args.rows, args.cleanup_rounds, parts.setdefault("cleanup", []))
    rows = [row for part in parts.values() for row in part]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure':<{width}}  result (ratio first; times are this machine's)")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    header = ["measure", "result (ratio first; times are this machine's)"]
    return {
        part: [table(header, [[name.strip(), value] for name, value in part_rows])]
        for part, part_rows in parts.items()
    }


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
