from __future__ import annotations

import os

import pytest

# Tests that drive real worker and beat processes across real minute boundaries depend on the
# timing of a shared 2-core machine. Each gets one more try, and pytest reports every rerun
# (`R` in the progress line, "rerun" in the summary), so a flaky test stays visible and one
# that fails twice still fails.
REAL_PROCESS_MARKERS = ("chaos", "integration")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("JOBSITE_TEST_RERUNS") == "0":  # to see a flaky test's first failure
        return
    for item in items:
        if any(item.get_closest_marker(name) for name in REAL_PROCESS_MARKERS):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))
