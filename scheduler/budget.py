"""A run's time budget: batch services stop starting new work when it is spent.

Each job declares `budget` seconds (scheduler.registry.Job), checked at start-up to lie below its
Celery soft time limit, which lies below its hard limit. The run path hands the service a fresh
`Budget`; a batch service checks `spent` between rows or batches, stops cleanly, and reports what
it left in its result as `backlog`, so the next run goes on where this one stopped and operators
see the backlog on the ledger row and in `jobsite_job_backlog`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    """`seconds` from the moment it is made (monotonic clock); `Budget.unlimited()` never ends."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(math.inf)

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    @property
    def spent(self) -> bool:
        return self.remaining() <= 0
