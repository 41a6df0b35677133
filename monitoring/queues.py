"""The broker's queues as the watchdog and `/metrics` read them: messages waiting in each Celery
queue, messages delivered but not acknowledged, and the consumers per queue the watchdog last
counted (published here for the scrapes between its passes). Redis only, one round trip each.
"""

from __future__ import annotations

import redis
from django.conf import settings

from scheduler.registry import QUEUES

# kombu's Redis transport keeps one list per priority step: "queue", "queue\x06\x163", ...
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_names() -> list[str]:
    return sorted({*QUEUES, settings.CELERY_TASK_DEFAULT_QUEUE})


# Consumers of each queue as the watchdog last counted them (outages.queue_workers_evaluate): a
# Redis hash next to the queues, expiring when the watchdog stops counting.
QUEUE_WORKERS_KEY = "jobsite:queue_workers"


def queue_depths(url: str | None = None) -> tuple[dict[str, int], int]:
    """Messages waiting in each Celery queue (all priority lists), and messages delivered to a
    worker but not acknowledged yet (countdown messages waiting for their offset are among them).
    `url`: the broker's (default: settings.CELERY_BROKER_URL)."""
    depths, unacked, _ = broker_counts(url or settings.CELERY_BROKER_URL)
    return depths, unacked


def broker_counts(url: str) -> tuple[dict[str, int], int, dict[str, int]]:
    """queue_depths, and the consumers per queue the watchdog last counted (one round trip)."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        pipe = client.pipeline()
        names = queue_names()
        for name in names:
            for step in PRIORITY_STEPS:
                pipe.llen(name if step == 0 else f"{name}{PRIORITY_SEP}{step}")
        pipe.hlen("unacked")
        pipe.hgetall(QUEUE_WORKERS_KEY)
        counts = pipe.execute()
    finally:
        client.close()
    per_step = len(PRIORITY_STEPS)
    depths = {name: sum(counts[i * per_step : (i + 1) * per_step]) for i, name in enumerate(names)}
    workers = {key.decode(): int(value) for key, value in counts[-1].items()}
    return depths, counts[-2], workers


def queue_workers_publish(url: str, workers: dict[str, int], *, ttl: int) -> None:
    """Store the watchdog's count of consumers per queue for the next scrapes (`ttl` seconds)."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        pipe = client.pipeline()
        pipe.delete(QUEUE_WORKERS_KEY)
        pipe.hset(QUEUE_WORKERS_KEY, mapping={name: str(n) for name, n in workers.items()})
        pipe.expire(QUEUE_WORKERS_KEY, ttl)
        pipe.execute()
    finally:
        client.close()
