"""`manage.py watchdog [--once] [--interval N]`: reconcile the ledger, evaluate and deliver alerts.

The only process that runs the reconciler and alerts (monitoring.watchdog); beat only sends. Run one
beside beat (Procfile, compose.yaml); a second one is harmless (it skips the passes the first
holds the lock for). SIGTERM or SIGINT ends it after the pass in progress.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from argparse import ArgumentParser, ArgumentTypeError
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from monitoring.watchdog import watchdog_pass

logger = logging.getLogger("monitoring.watchdog")


class Command(BaseCommand):
    help = (
        "Every WATCHDOG_INTERVAL seconds: look for outages (beat down, broker down, no worker "
        "on a queue), run the "
        "reconciler, evaluate per-job alerts (failures, missed and late runs) and deliver "
        "notifications. Runs until SIGTERM or SIGINT; --once does one pass (beat judged at "
        "once) and exits."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument(
            "--interval",
            type=_seconds,
            default=None,
            help="seconds between two passes (default: WATCHDOG_INTERVAL, "
            f"{settings.WATCHDOG_INTERVAL} s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            report = watchdog_pass(judge_workers=True)
            logger.info("watchdog pass: %s", report.describe())
            connections.close_all()
            return
        interval = options["interval"] or float(settings.WATCHDOG_INTERVAL)
        stop = threading.Event()

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            logger.info("watchdog: %s received; stopping after this pass", signal.strsignal(signum))
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("watchdog started (pid %s): a pass every %.0f s", os.getpid(), interval)
        # A beat started beside the watchdog (make run, compose up) may take a few seconds to
        # stamp its first heartbeat: beat is judged once the watchdog has been up as long as beat
        # may go without one, so a deploy does not page "beat down" for a beat still starting.
        judge_beat_from = time.monotonic() + settings.HEALTH_BEAT_DOWN_AFTER
        while not stop.is_set():
            # (workers started beside it are given the same time to come up)
            settled = time.monotonic() >= judge_beat_from
            report = watchdog_pass(judge_beat=settled, judge_workers=settled)
            # Every pass that did something says what; a quiet one is one line at DEBUG.
            level = logging.INFO if report.eventful or report.skipped else logging.DEBUG
            logger.log(level, "watchdog pass: %s", report.describe())
            stop.wait(max(0.0, interval - report.seconds))
        connections.close_all()
        logger.info("watchdog stopped")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 1 <= value <= 300:
        raise ArgumentTypeError(f"{text} is outside 1..300 seconds")
    return value
