"""Job messages carry their job's name as Celery's `shadow` name, so Flower and the worker's logs
show "prize-pool-finalisation", not "games.prize_pool_finalise".

Set at publish for every sender (beat, the dispatch path, the watchdog, `celery call`): one place
instead of one `shadow=` per call site. The worker still runs the task by its real name; `shadow`
only renames it in events and logs (celery.worker.request.Request.name).
"""

from __future__ import annotations

from typing import Any

from celery.signals import before_task_publish

from scheduler.registry import job_for_task


@before_task_publish.connect(dispatch_uid="scheduler.shadow")
def name_job_messages(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any):
    if headers is None or headers.get("shadow"):
        return
    job = job_for_task(sender or headers.get("task", ""))
    if job is not None:
        headers["shadow"] = job.name
