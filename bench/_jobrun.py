"""One run of a job in its own process, as a worker's pool child runs it (for bench_jobs).

    python -m bench._jobrun JOB

Sets Django up, then sends one delivery through `job_execute` (slot claim, lease, service with a
fresh budget, fenced success: the path every trigger takes, as `runjob --sync` does) under the
job's own Celery limits: `SoftTimeLimitExceeded` is raised inside the run at `soft_time_limit`
(Celery's pool does it with a signal to the child, we with SIGALRM), and the process is ended at
`time_limit` (Celery's pool kills the child). Prints one line, `BENCH-RESULT {json}`: the run's
status, result and error, the wall time of `job_execute`, whether the soft limit was raised, and
the process's peak RSS before and after the run (MB).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

MARKER = "BENCH-RESULT "


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _report(payload: dict[str, Any]) -> None:
    sys.stdout.write(MARKER + json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def main(name: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobsite.settings")
    import django

    django.setup()
    from celery.exceptions import SoftTimeLimitExceeded
    from django.utils import timezone

    from scheduler.models import JobRun
    from scheduler.registry import get_job
    from scheduler.services.runs import Delivery, job_execute, new_task_id, slot_of

    job = get_job(name)
    baseline = _peak_rss_mb()
    started = time.perf_counter()

    soft_fired: list[float] = []  # when the soft limit was raised, if it was

    def soft_limit(signum: int, frame: object) -> None:
        soft_fired.append(time.perf_counter() - started)
        raise SoftTimeLimitExceeded(f"soft time limit ({job.soft_time_limit} s) exceeded")

    def hard_limit() -> None:
        _report(
            {
                "status": "killed",
                "error": f"hard time limit ({job.time_limit} s) exceeded: process killed",
                "soft_limit_raised": bool(soft_fired),
                "seconds": time.perf_counter() - started,
                "rss_baseline_mb": baseline,
                "rss_peak_mb": _peak_rss_mb(),
                "result": {},
            }
        )
        os._exit(137)

    signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, job.soft_time_limit)
    killer = threading.Timer(job.time_limit, hard_limit)
    killer.daemon = True
    killer.start()
    try:
        outcome = job_execute(
            Delivery(
                job=job,
                slot=slot_of(timezone.now()),
                trigger=JobRun.Trigger.MANUAL,
                task_id=f"bench-{new_task_id()}",
                worker="bench jobs",
                reason="bench jobs",
            )
        )
        seconds = time.perf_counter() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        killer.cancel()
    run = outcome.run
    _report(
        {
            "status": run.status,
            "error": run.error[:300],
            "seconds": seconds,
            "duration_ms": run.duration_ms,
            "soft_limit_raised": bool(soft_fired),
            "rss_baseline_mb": baseline,
            "rss_peak_mb": _peak_rss_mb(),
            "result": run.result or {},
        }
    )


if __name__ == "__main__":
    main(sys.argv[1])
