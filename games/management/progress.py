"""A small text progress bar for management commands (no dependency for one bar)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`with ProgressBar("sessions", total) as bar: bar.advance(n)`; redraws at most 10x/s."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, width: int = 30):
        self.label, self.total, self.width = label, max(total, 1), width
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> ProgressBar:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()

    def advance(self, count: int = 1) -> None:
        self.done = min(self.total, self.done + count)
        self._draw()

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = int(self.width * self.done / self.total)
        rate = self.done / max(now - self.started, 1e-9)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(
            f"\r{self.label:<12} [{bar}] {self.done:>10,}/{self.total:,} {rate:>9,.0f}/s"
        )
        self.stream.flush()
