"""Running totals of the ledger that retention cannot lower: runs per (job, status), durations
and start lateness as cumulative histograms, the newest success.

`/metrics` exports them as Prometheus counters and histograms, which must only grow: pruning
deletes ledger rows, so counting the ledger at scrape time would go down and `rate()` would read
every prune as a counter reset. PostgreSQL keeps the totals instead: statement-level triggers on
`scheduler_jobrun` (migration 0006) add every row that enters a finished status (anything but
`queued` and `running`), on INSERT (missed, expired, duplicate, skipped rows) and on the UPDATE
that ends a run, in the same transaction as the write. A row is counted once per status it
enters; DELETE and TRUNCATE of the ledger change nothing here.

Why triggers and not "count the ledger, plus an archive of what retention deleted": that export
scans every retained row at every scrape, and every writer that deletes must remember the
archive. Measured here (2 shared cores, 1M ledger rows): the grouped count with these histograms
takes ~1.2 s per scrape (the count alone ~0.3 s), against the 1 s budget of /metrics; the
triggers cost each INSERT/UPDATE statement on the ledger ~0.05-0.1 ms (one grouped upsert of at
most a few rows), and /metrics reads ~100 tally rows in ~30 ms whatever the ledger's size
(`make bench ARGS="pages --ledger-days 58"`).

The bucket bounds below are frozen in the migration's SQL (a tally counted with other bounds
cannot be re-bucketed); tests/scheduler/test_tally.py checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection

# Upper bounds ("le") in milliseconds. Durations: jobs run from milliseconds to their budget
# (minutes; cleanup up to an hour). Lateness: the goal is p99 under 1 s, the alert fires at 60 s.
DURATION_BUCKETS_MS = (
    10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000, 3_600_000,
)  # fmt: skip
LATENESS_BUCKETS_MS = (
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000,
)  # fmt: skip


@dataclass
class Histogram:
    """Cumulative counts per bound of `bounds_ms` (value <= bound), then count and sum."""

    bounds_ms: tuple[int, ...]
    cumulative: list[int]
    count: int = 0
    sum_ms: int = 0

    @classmethod
    def empty(cls, bounds_ms: tuple[int, ...]) -> Histogram:
        return cls(bounds_ms, [0] * len(bounds_ms))

    def add(self, cumulative: list[int], count: int, sum_ms: int) -> None:
        self.cumulative = [a + b for a, b in zip(self.cumulative, cumulative, strict=True)]
        self.count += count
        self.sum_ms += sum_ms


@dataclass
class JobTally:
    job: str
    runs: dict[str, int]  # finished status -> rows that entered it, ever
    duration: Histogram  # runs that recorded a duration (they ran: succeeded, failed, ...)
    lateness: Histogram  # beat-sent runs that started
    last_success: datetime | None


_TALLY_SQL = """
SELECT job, status, runs, duration_count, duration_sum_ms, duration_le, lateness_count,
       lateness_sum_ms, lateness_le, last_finished_at
FROM scheduler_jobruntally
WHERE job = ANY(%s)
"""


def job_tallies(names: list[str]) -> dict[str, JobTally]:
    """The totals of each job in `names` (zeros for a job that never finished a run): one
    statement over at most (jobs x statuses) rows, whatever the ledger's size."""
    tallies = {
        name: JobTally(
            job=name,
            runs={},
            duration=Histogram.empty(DURATION_BUCKETS_MS),
            lateness=Histogram.empty(LATENESS_BUCKETS_MS),
            last_success=None,
        )
        for name in names
    }
    with connection.cursor() as cursor:
        cursor.execute(_TALLY_SQL, [names])
        rows = cursor.fetchall()
    for job, status, runs, d_count, d_sum, d_le, l_count, l_sum, l_le, last in rows:
        tally = tallies[job]
        tally.runs[status] = runs
        tally.duration.add(d_le, d_count, d_sum)
        tally.lateness.add(l_le, l_count, l_sum)
        if status == "succeeded":
            tally.last_success = last
    return tallies
