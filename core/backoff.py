"""Exponential backoff: the one formula behind every retry wait of the project.

Callers: job retries (`scheduler.registry.RetryPolicy.delay`), notification retries
(`games.services.notifications.notification_backoff`). Two waits are computed in SQL, row by row
inside the statement that counts the failure, and mirror this function term for term (a test
checks each against it): a player's payout backoff (`referrals.services.settlement`) and a
set-aside row's retry (`referrals.services.failures`).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

# 2**60 times any base in seconds is far past any cap; bounding the exponent keeps the float
# finite for absurd attempt counts (the SQL mirrors bound it the same way).
MAX_DOUBLINGS = 60


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...).

    `base * 2**(attempt - 1)`, at most `cap`, then longer by up to `jitter` of it (a factor in
    [1, 1 + jitter), `random` returning a float in [0, 1)), so that callers that failed together
    do not all come back at once. Jitter only lengthens a wait: it is never shorter than the
    capped doubling. Attempt 0 or less counts as 1.
    """
    doublings = min(max(attempt - 1, 0), MAX_DOUBLINGS)
    return min(cap, base * 2.0**doublings) * (1 + jitter * random())
