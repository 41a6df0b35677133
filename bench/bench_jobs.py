"""Every batch job on a volume of its own work, against its time limits.

    python -m bench jobs [--rows N] [--only JOB] [--max-runs N] [--max-seconds S]
                         [--report PATH] [--keep]

For each batch job: its tables are emptied (TRUNCATE ... CASCADE, bench database only), N rows of
its own work are seeded set-based (reusing bench_games' and bench_referrals' seeders where they
fit), the tables are VACUUM ANALYZEd (as autovacuum would have left them), then the job runs
again and again, each run in a fresh worker-like process (`bench._jobrun`: the run path with
the job's budget, Celery's soft limit raised inside the run and its hard limit killing the
process), until its work is gone, --max-runs runs or --max-seconds of runs. What is left is
counted by the bench's own query after every run (so the bench works whether or not the service
reports a `backlog`); a job that reports one is shown with it.

Reported per job: runs needed, time per run (median, max), rows per second over all runs, the
worker's peak RSS (largest of the runs; the process's baseline after Django's start in the
notes), the job's limits (hard / soft / budget) and the verdict: every run ended by itself
before its soft limit. The table is printed, and recorded by the runner (bench/__main__.py) with
date, commit and machine for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench._env import servers
from bench._jobrun import MARKER
from devtools.gendocs import Block, bullets, render_block, table, text

GAMES = "ARRAY['snake','tetris','pong','breakout','space_invaders']"


def sql(statement: str, params: dict[str, Any] | list[Any] | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params if params is not None else {})
        return cursor.rowcount


def scalar(statement: str, params: dict[str, Any] | list[Any] | None = None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params if params is not None else {})
        return int(cursor.fetchone()[0] or 0)


def players(count: int, prefix: str) -> None:
    sql(
        "INSERT INTO games_player (handle, wallet_address, created_at) "
        "SELECT %(prefix)s || g, '0xbench' || g, now() - interval '90 days' "
        "FROM generate_series(1, %(n)s) g",
        {"prefix": prefix, "n": max(1, count)},
    )


# -- seeders: N rows of each job's own work -----------------------------------------------------
# Times are relative to the database's now(): the worker runs with the real clock as its slot.


def seed_notifications(rows: int) -> None:
    """N due notifications (badge awards, as badge-auto-unlock queues them) for N/10 players,
    due during the last hour, none tried yet."""
    players(rows // 10, "bench-n-")
    sql(
        """WITH p AS (SELECT min(id) AS first, count(*) AS n FROM games_player)
           INSERT INTO games_notification
               (player_id, kind, title, body, dedupe_key, status, due_at, next_attempt_at,
                attempts, last_error, delivered_at, created_at)
           SELECT p.first + g %% p.n, 'badge', 'Badge unlocked: First game',
                  'Finished a first game.', 'bench:' || g, 'pending', t.at, t.at, 0, '', NULL,
                  t.at
           FROM p, generate_series(1, %(n)s) g,
                LATERAL (SELECT now() - make_interval(secs => g %% 3600)) t(at)""",
        {"n": rows},
    )


def seed_stuck(rows: int) -> None:
    """N active sessions of N/10 players that reported a score and started a day ago (every
    game's maximum duration is minutes); fees as in seed_demo (half free)."""
    players(rows // 10, "bench-s-")
    sql(
        f"""WITH p AS (SELECT min(id) AS first, count(*) AS n FROM games_player)
           INSERT INTO games_gamesession
               (player_id, game, status, entry_fee, score, started_at, last_score_at)
           SELECT p.first + g %% p.n, ({GAMES})[1 + g %% 5], 'active',
                  (ARRAY[0, 0, 0, 0, 0.50, 0.50, 1.00, 1.00, 2.00, 0])[1 + g %% 10],
                  (g * 7919) %% 5000, t.at, t.at + interval '3 minutes'
           FROM p, generate_series(1, %(n)s) g,
                LATERAL (SELECT now() - interval '1 day' - make_interval(secs => g)) t(at)""",
        {"n": rows},
    )


def seed_badges(rows: int) -> None:
    """N/2 players, each with one finished session (badge "first-game") and an all-time Snake
    best of 1,000 or more (badge "snake-1000"): N awards due, none given yet."""
    count = max(1, rows // 2)
    players(count, "bench-b-")
    sql(
        """INSERT INTO games_gamesession
               (player_id, game, status, entry_fee, score, started_at, finished_at,
                last_score_at)
           SELECT id, 'snake', 'finished', 0.50, 1000 + id %% 3000,
                  now() - interval '2 days', now() - interval '2 days' + interval '5 minutes',
                  now() - interval '2 days' + interval '5 minutes'
           FROM games_player"""
    )
    sql(
        """INSERT INTO games_leaderboardentry
               (player_id, game, period, period_start, score, achieved_at, session_id)
           SELECT player_id, game, 'all_time', DATE '2000-01-01', score, finished_at, id
           FROM games_gamesession"""
    )


def seed_predictions(rows: int) -> None:
    """20 closed pools (5 games x the 4 days before yesterday; 2 without a winner), N/20
    players each predicting every pool (a tenth of them right)."""
    per_pool = max(1, math.ceil(rows / 20))
    players(per_pool, "bench-p-")
    sql(
        f"""WITH p AS (SELECT min(id) AS first, count(*) AS n FROM games_player)
           INSERT INTO games_prizepool
               (game, period, period_start, amount, carried_in, status, winner_id,
                winning_score, finalised_at, created_at)
           SELECT g.game, 'daily', d.day,
                  CASE WHEN k.no_winner THEN 0 ELSE 25.00 END, 0,
                  CASE WHEN k.no_winner THEN 'no_winner' ELSE 'finalised' END,
                  CASE WHEN k.no_winner THEN NULL ELSE p.first + k.n %% p.n END,
                  CASE WHEN k.no_winner THEN NULL ELSE 5000 END,
                  d.day + interval '1 day 50 seconds', d.day
           FROM p, unnest({GAMES}) WITH ORDINALITY g(game, i),
                LATERAL (SELECT (now() AT TIME ZONE 'UTC')::date - 1 - j, j
                         FROM generate_series(1, 4) j) d(day, i),
                LATERAL (SELECT (g.i - 1) * 4 + d.i - 1 AS n) pool_no,
                LATERAL (SELECT pool_no.n, pool_no.n < 2 AS no_winner) k"""
    )
    sql(
        """WITH p AS (SELECT min(id) AS first, count(*) AS n FROM games_player)
           INSERT INTO games_prediction
               (player_id, pool_id, predicted_winner_id, outcome, points, created_at)
           SELECT pl.id, pool.id,
                  CASE WHEN (pl.id + pool.id) %% 10 = 0 AND pool.winner_id IS NOT NULL
                       THEN pool.winner_id ELSE p.first + (pl.id * 31 + pool.id) %% p.n END,
                  'pending', 0, pool.period_start + interval '12 hours'
           FROM p, games_prizepool pool, games_player pl"""
    )


def seed_cleanup(rows: int) -> None:
    """bench_games' cleanup data: N expired free sessions 60+ days old, 30 % with a board entry."""
    from bench.bench_games import seed_expired

    seed_expired(rows)


def seed_referral_events(rows: int) -> None:
    """bench_referrals' data: chains of four players, N paid sessions of the last player of each
    chain with their pending tier-1 rewards (as the session_finished receiver writes them)."""
    from bench.bench_referrals import EVENTS_PER_PLAYER, NOW, SEED

    per_player = min(EVENTS_PER_PLAYER, rows)
    chains = max(1, rows // per_player)
    sql(SEED, {"at": NOW, "players": chains * 4, "per_player": per_player})


def seed_retention(rows: int) -> None:
    """N/2 ledger rows (runs of the registered jobs, 40 days old, 5 % of them failed) and N/2
    Celery task results of the same age."""
    from scheduler.registry import all_jobs

    names = [job.name for job in all_jobs()]
    half = max(1, rows // 2)
    sql(
        """INSERT INTO scheduler_jobrun
               (job, slot, attempt, status, trigger, reason, task_id, worker, fence, created_at,
                started_at, heartbeat_at, finished_at, duration_ms, lateness_ms, result, error,
                traceback)
           SELECT (%(names)s::text[])[1 + g %% %(jobs)s], t.slot, 1,
                  CASE WHEN g %% 20 = 0 THEN 'failed' ELSE 'succeeded' END, 'beat', '',
                  'bench-' || g, 'celery@bench', g, t.slot, t.slot, t.slot,
                  t.slot + interval '40 ms', 40, 12, '{"done": 3}'::jsonb,
                  CASE WHEN g %% 20 = 0 THEN 'OperationalError: bench' ELSE '' END, ''
           FROM generate_series(1, %(n)s) g,
                LATERAL (SELECT now() - interval '40 days' + make_interval(secs => g)) t(slot)""",
        {"names": names, "jobs": len(names), "n": half},
    )
    sql(
        """INSERT INTO django_celery_results_taskresult
               (task_id, status, content_type, content_encoding, result, date_done, traceback,
                meta, task_args, task_kwargs, task_name, worker, date_created,
                periodic_task_name, date_started)
           SELECT 'bench-' || g, CASE WHEN g %% 20 = 0 THEN 'FAILURE' ELSE 'SUCCESS' END,
                  'application/json', 'utf-8', '{"done": 3}', t.at, NULL,
                  '{"children": []}', '()', '{}', 'games.notifications_deliver',
                  'celery@bench', t.at, NULL, t.at
           FROM generate_series(1, %(n)s) g,
                LATERAL (SELECT now() - interval '40 days' + make_interval(secs => g)) t(at)""",
        {"n": half},
    )


# -- what is left: the bench's own count, whatever the service reports -------------------------


def tier_remaining(tier: int) -> Callable[[], int]:
    def remaining() -> int:
        from referrals import conf

        rate = conf.load().rates[tier]
        return scalar(
            """SELECT count(*) FROM referrals_referralreward t1
               WHERE t1.tier = 1 AND referrals_money_round(t1.base_amount * %(rate)s) > 0
                 AND NOT EXISTS (SELECT 1 FROM referrals_referralreward t
                                 WHERE t.session_id = t1.session_id AND t.tier = %(tier)s)""",
            {"rate": rate, "tier": tier},
        )

    return remaining


@dataclass(frozen=True)
class Spec:
    job: str
    work: str  # what one row of work is, for the report
    tables: tuple[str, ...]  # truncated (CASCADE) before seeding and after the job
    seed: Callable[[int], None]
    remaining: Callable[[], int]
    note: str = ""  # about the seeded state, for the report


GAME_TABLES = ("games_player", "games_prizepool", "games_notification")
REFERRAL_TABLES = (*GAME_TABLES, "referrals_tierprogress")

SPECS = [
    Spec(
        "scheduled-notifications",
        "due notifications",
        GAME_TABLES,
        seed_notifications,
        lambda: scalar(
            "SELECT count(*) FROM games_notification "
            "WHERE status = 'pending' AND next_attempt_at <= now()"
        ),
    ),
    Spec(
        "stuck-session-finisher",
        "overdue active sessions with a score",
        GAME_TABLES,
        seed_stuck,
        lambda: scalar(
            "SELECT count(*) FROM games_gamesession "
            "WHERE status = 'active' AND last_score_at IS NOT NULL"
        ),
    ),
    Spec(
        "badge-auto-unlock",
        "badge awards due",
        GAME_TABLES,
        seed_badges,
        lambda: scalar(
            "SELECT 2 * (SELECT count(*) FROM games_player) - (SELECT count(*) "
            "FROM games_playerbadge)"
        ),
        "no award exists yet (a first run over an existing player base; while one statement "
        "both read and inserted, the planner's nested-loop anti join re-read the statement's "
        "own inserts and this took 139 s; now chunks of GAMES_BADGE_BATCH_SIZE players, read "
        "then insert)",
    ),
    Spec(
        "prediction-matcher",
        "predictions on closed pools",
        GAME_TABLES,
        seed_predictions,
        lambda: scalar("SELECT count(*) FROM games_prediction WHERE outcome = 'pending'"),
    ),
    Spec(
        "cleanup",
        "old expired free sessions (+30 % board entries)",
        GAME_TABLES,
        seed_cleanup,
        lambda: scalar(
            "SELECT (SELECT count(*) FROM games_gamesession WHERE status = 'expired') + "
            "(SELECT count(*) FROM games_leaderboardentry e LEFT JOIN games_gamesession s "
            "ON s.id = e.session_id WHERE s.id IS NULL OR s.status = 'expired')"
        ),
    ),
    Spec(
        "referral-tier2",
        "tier-1 rewards due a tier-2 reward",
        REFERRAL_TABLES,
        seed_referral_events,
        tier_remaining(2),
    ),
    Spec(
        "referral-tier3",
        "tier-1 rewards due a tier-3 reward (a fifth round to 0.00: none due)",
        REFERRAL_TABLES,
        seed_referral_events,
        tier_remaining(3),
    ),
    Spec(
        "settlement",
        "pending rewards",
        REFERRAL_TABLES,
        seed_referral_events,
        lambda: scalar("SELECT count(*) FROM referrals_referralreward WHERE status = 'pending'"),
    ),
    Spec(
        "retention-pruning",
        "40-day-old ledger rows + task results",
        ("scheduler_jobrun", "django_celery_results_taskresult"),
        seed_retention,
        lambda: scalar(
            "SELECT (SELECT count(*) FROM scheduler_jobrun "
            "WHERE finished_at < now() - interval '31 days') + "
            "(SELECT count(*) FROM django_celery_results_taskresult "
            "WHERE date_done < now() - interval '31 days')"
        ),
    ),
]


# -- running ------------------------------------------------------------------------------------


@dataclass
class Run:
    status: str
    seconds: float
    rss_peak_mb: float
    rss_baseline_mb: float
    done: int
    left: int
    backlog: Any  # what the service reported, None when it reports nothing
    error: str = ""
    soft_limit_raised: bool = False


@dataclass
class Outcome:
    spec: Spec
    rows: int
    seed_seconds: float
    runs: list[Run] = field(default_factory=list)
    stopped: str = ""  # why the bench stopped before the work was done


def run_once(job: str, time_limit: int) -> Run | None:
    """One run in a fresh process; None when the process printed no result."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench._jobrun", job],
            capture_output=True,
            text=True,
            check=False,
            # The process ends itself at the job's hard limit; this is for a process that hangs
            # before the run starts (e.g. waiting for the database).
            timeout=time_limit + 120,
        )
    except subprocess.TimeoutExpired:
        print(f"  run did not end within {time_limit + 120} s")
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  run printed no result (exit {proc.returncode}): {' | '.join(tail)}")
        return None
    data = json.loads(lines[-1].removeprefix(MARKER))
    result = data.get("result") or {}
    return Run(
        status=data["status"],
        seconds=data.get("seconds", time.perf_counter() - started),
        rss_peak_mb=data["rss_peak_mb"],
        rss_baseline_mb=data["rss_baseline_mb"],
        done=0,
        left=0,
        backlog=result.get("backlog") if isinstance(result, dict) else None,
        error=data.get("error", ""),
        soft_limit_raised=bool(data.get("soft_limit_raised")),
    )


def release_lease(job: str) -> None:
    """After a killed run: the lease would block runs until its TTL ends; the bench frees it
    (a real worker's successor waits lock_ttl seconds instead)."""
    sql(
        "UPDATE scheduler_joblease SET holder_id = NULL, expires_at = now() WHERE job = %s",
        [job],
    )
    sql(
        "UPDATE scheduler_jobrun SET status = 'lost', finished_at = now() "
        "WHERE job = %s AND status = 'running'",
        [job],
    )


def bench_job(spec: Spec, rows: int, max_runs: int, max_seconds: float, keep: bool) -> Outcome:
    from django.db import connection

    from scheduler.registry import get_job

    truncate(spec)
    started = time.perf_counter()
    spec.seed(rows)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # statistics, as autovacuum would have left them
    seed_seconds = time.perf_counter() - started
    left = spec.remaining()
    outcome = Outcome(spec=spec, rows=left, seed_seconds=seed_seconds)
    print(f"{spec.job}: seeded {left:,} {spec.work} in {seed_seconds:.1f} s", flush=True)
    fruitless = 0
    while left > 0:
        if len(outcome.runs) >= max_runs:
            outcome.stopped = f"run cap ({max_runs} runs)"
            break
        if sum(r.seconds for r in outcome.runs) >= max_seconds:
            outcome.stopped = f"time cap ({max_seconds:.0f} s of runs)"
            break
        run = run_once(spec.job, get_job(spec.job).time_limit)
        if run is None or run.status == "killed":
            release_lease(spec.job)
        if run is None:
            outcome.stopped = "a run printed no result"
            break
        now_left = spec.remaining()
        run.done, run.left, left = left - now_left, now_left, now_left
        outcome.runs.append(run)
        backlog = "" if run.backlog is None else f", backlog {run.backlog}"
        print(
            f"  run {len(outcome.runs)}: {run.status} in {run.seconds:.2f} s, {run.done:,} done, "
            f"{run.left:,} left{backlog}, peak RSS {run.rss_peak_mb:.0f} MB"
            + (f" ({run.error[:120]})" if run.error else ""),
            flush=True,
        )
        fruitless = fruitless + 1 if run.done <= 0 else 0
        if fruitless >= 3:
            outcome.stopped = "3 runs in a row did nothing"
            break
    if not keep:
        truncate(spec)
    return outcome


def truncate(spec: Spec) -> None:
    sql(f"TRUNCATE {', '.join(spec.tables)} CASCADE")


# -- the table ------------------------------------------------------------------------------------


def row(outcome: Outcome) -> tuple[list[str], list[str]]:
    """The table's cells for one job, and its notes."""
    from scheduler.registry import get_job

    job = get_job(outcome.spec.job)
    runs = outcome.runs
    notes: list[str] = []
    limits = f"{job.time_limit} / {job.soft_time_limit} / {job.budget}"
    if not runs:
        why = outcome.stopped or "nothing to do"
        return [job.name, f"{outcome.rows:,}", "0", "-", "-", "-", limits, why], notes
    times = [r.seconds for r in runs]
    done = sum(r.done for r in runs)
    total = sum(times)
    left = runs[-1].left
    needed = str(len(runs))
    if left > 0:
        per_run = done / len(runs) if done > 0 else 0
        estimate = f", ~{len(runs) + math.ceil(left / per_run)} at this pace" if per_run else ""
        needed = f">{len(runs)}{estimate}"
        notes.append(
            f"stopped by the bench's {outcome.stopped} with {left:,} of {outcome.rows:,} left "
            f"({done / len(runs):,.0f} per run)"
        )
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    bad = {s: n for s, n in statuses.items() if s != "succeeded"}
    if bad:
        errors = sorted({r.error.split(":")[0] for r in runs if r.error})
        notes.append(
            "runs " + ", ".join(f"{s}: {n}" for s, n in bad.items()) + f" ({'; '.join(errors)})"
        )
    swallowed = sum(1 for r in runs if r.soft_limit_raised and r.status in ("killed", "succeeded"))
    if swallowed:
        notes.append(
            f"in {swallowed} run(s) Celery's SoftTimeLimitExceeded was raised at "
            f"{job.soft_time_limit} s and the run went on (caught inside the service) "
            "until it ended or the hard limit killed it"
        )
    longest = max(times)
    if longest > job.budget and longest < job.soft_time_limit:
        notes.append(f"longest run {longest:.1f} s is over its budget of {job.budget} s")
    reported = [r.backlog for r in runs if r.backlog is not None]
    if reported:
        notes.append(f"reports `backlog` (last run: {reported[-1]}; bench counted {left:,})")
    elif len(runs) > 1 or left:
        notes.append("reports no `backlog` in its result")
    baseline = max(r.rss_baseline_mb for r in runs)
    peak = max(r.rss_peak_mb for r in runs)
    notes.append(f"RSS after Django start {baseline:.0f} MB, +{peak - baseline:.0f} MB in the run")
    ok = not bad and longest < job.soft_time_limit
    verdict = "ok" if ok else ("OVER soft limit" if longest >= job.soft_time_limit else "FAILED")
    if ok and left > 0:
        verdict = "ok per run, backlog left"
    cells = [
        job.name,
        f"{outcome.rows:,}",
        needed,
        f"{statistics.median(times):.2f} / {longest:.2f}",
        f"{done / total:,.0f}" if total > 0 else "-",
        f"{peak:.0f}",
        limits,
        verdict,
    ]
    return cells, notes


HEADER = [
    "job",
    "rows",
    "runs needed",
    "s per run (median / max)",
    "rows/s",
    "worker peak RSS MB",
    "limit / soft / budget s",
    "verdict (max run < soft limit)",
]


def blocks(outcomes: list[Outcome]) -> tuple[Block, Block]:
    """The table, one row per job, and the notes, one per job."""
    rows: list[list[str]] = []
    notes: list[str] = []
    for outcome in outcomes:
        cells, job_notes = row(outcome)
        rows.append(cells)
        seeded = f"{outcome.spec.work}, seeded in {outcome.seed_seconds:.1f} s"
        about = [seeded, *filter(None, [outcome.spec.note]), *job_notes]
        notes.append(f"{outcome.spec.job}: " + "; ".join(about) + ".")
    return table(HEADER, rows), bullets(notes, "Notes:")


def main(argv: list[str]) -> dict[str, list[Block]]:
    names = [spec.job for spec in SPECS]
    parser = argparse.ArgumentParser(prog="bench jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of work per job (100,000)")
    parser.add_argument("--only", choices=names, action="append", help="this job (repeatable)")
    parser.add_argument("--max-runs", type=int, default=30, help="runs per job at most (30)")
    parser.add_argument(
        "--max-seconds", type=float, default=180, help="seconds of runs per job at most (180)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="leave the last job's tables as its runs left them"
    )
    args = parser.parse_args(argv)
    wanted = [spec for spec in SPECS if not args.only or spec.job in args.only]
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    with servers():
        for spec in wanted:
            last = spec is wanted[-1]
            outcomes.append(
                bench_job(spec, args.rows, args.max_runs, args.max_seconds, args.keep and last)
            )
    jobs_table, notes = blocks(outcomes)
    print("\n" + render_block(jobs_table) + "\n\n" + render_block(notes))
    about = text(
        f"{args.rows:,} rows per job, caps {args.max_runs} runs / {args.max_seconds:.0f} s of "
        f"runs per job, {time.perf_counter() - started:.0f} s in all. Each run in a fresh "
        "worker-like process (bench/_jobrun.py) under the job's own soft and hard limits."
    )
    return {"jobs": [about, jobs_table, notes]}
