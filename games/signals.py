"""Signals other apps connect to.

`session_finished` is sent by `game_session_finish` INSIDE its transaction, after the session, its
boards and the pools are written, with `session=<GameSession>`. A receiver that writes (the
referrals app creates tier-1 rewards) therefore commits or rolls back together with the finish;
a receiver must not do slow or external work (enqueue it with `transaction.on_commit`).
"""

from __future__ import annotations

import django.dispatch

session_finished = django.dispatch.Signal()
