"""Nothing of ops writes here any more: every schedule write, manual run and retry is a scheduler
service (`scheduler.services.writes`, `scheduler.services.manual_runs`), audited there; who asks
is read from the request in `ops.actors`.

What is left is one name `ops.selectors` still imports; it goes when that module moves.
"""

from __future__ import annotations

from scheduler.selectors import next_starts as next_slots

__all__ = ["next_slots"]
