from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Generator
from typing import Any

import pytest

from devtools.pytest_plugin import DURATIONS_FILE

# Tests that drive real worker and beat processes across real minute boundaries depend on the
# timing of a shared 2-core machine. Each gets one more try, and pytest reports every rerun
# (`R` in the progress line, "rerun" in the summary), so a flaky test stays visible and one
# that fails twice still fails.
REAL_PROCESS_MARKERS = ("chaos", "integration")

# A test that starts a subprocess carries one of these: `make test-fast` leaves them all out, and
# a test that starts one without a marker fails (`_refuse_unmarked_subprocesses` below).
PROCESS_MARKERS = ("integration", "chaos", "browser", "slow", "process")

# What a test takes when tests/durations.json does not know it yet, by marker (seconds).
GUESSED_SECONDS = {"slow": 300, "chaos": 120, "browser": 60, "integration": 60, "process": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # After pytest-django's own ordering (tryfirst): a stable sort keeps it among equals.
    _longest_first(items)
    if os.environ.get("JOBSITE_TEST_RERUNS") == "0":  # to see a flaky test's first failure
        return
    for item in items:
        if any(item.get_closest_marker(name) for name in REAL_PROCESS_MARKERS):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


def _longest_first(items: list[pytest.Item]) -> None:
    """Order the tests longest first, from tests/durations.json or a guess by marker.

    Most of the suite's wall clock is real processes waiting for real minute boundaries. Under
    pytest-xdist (`--dist loadgroup` hands out one test at a time, in this order) the long tests
    start at once on every worker and the short ones fill the gaps, so a run lasts about as long
    as its longest test rather than as long as the last long test to be handed out. Refresh the
    file with `make test PYTEST_ARGS=--store-durations`.

    The order differs from Django's (transactional tests last): a test must not depend on rows
    that a migration wrote, since a transactional test before it flushes them (games' badges
    are re-created by the `badges` fixture of tests/games/conftest.py for that reason).
    """
    known: dict[str, float] = (
        json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.exists() else {}
    )

    def seconds(item: pytest.Item) -> float:
        if item.nodeid in known:
            return known[item.nodeid]
        guesses = [s for name, s in GUESSED_SECONDS.items() if item.get_closest_marker(name)]
        return max(guesses, default=0.0)

    items.sort(key=seconds, reverse=True)


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Generator[None]:
    """Django's advice for test suites: a cheap hasher for the users tests create and log in
    (PBKDF2's 1,000,000 iterations cost ~0.3 s of CPU per user and per login, most of the admin
    and API tests' time). The production hasher's list stays behind it, so a password stored by
    another process is still checked; nothing here tests hashing itself."""
    from django.conf import settings
    from django.test.utils import override_settings

    with override_settings(
        PASSWORD_HASHERS=[
            "django.contrib.auth.hashers.MD5PasswordHasher",
            *settings.PASSWORD_HASHERS,
        ]
    ):
        yield


def module_is_transactional(request: pytest.FixtureRequest) -> bool:
    """Whether any test of the requesting module is `django_db(transaction=True)`: such a
    test commits and flushes, so it cannot run inside `module_db`'s open transaction."""
    from pytest_django.fixtures import validate_django_db

    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        marker = item.get_closest_marker("django_db")
        if marker is not None and validate_django_db(marker)[0]:
            return True
    return False


def audit_rows() -> Any:
    """The audit rows a test is about: all but those its fixtures wrote applying the schedules
    (`Actor.system("tests")`: every schedule write is audited, fixtures' too)."""
    from scheduler.models import AuditEvent

    return AuditEvent.objects.exclude(via="system", username="tests")


@pytest.fixture(scope="module")
def module_db(
    request: pytest.FixtureRequest, django_db_setup: None, django_db_blocker: Any
) -> Generator[bool]:
    """Rows a module's tests share, made once: Django's `TestCase.setUpTestData` for pytest.

    A module-scoped fixture that depends on this one writes inside a transaction left open for
    the module; each test's own transaction (pytest-django's `django_db`) is a savepoint in it,
    so whatever a test writes is rolled back to the shared rows, and the shared rows are rolled
    back after the module's last test on this worker (pytest-django leaves TestCase's own
    class-level transaction out for this). Function-scoped fixtures should hand each test a
    `copy.deepcopy` of shared model instances, as setUpTestData does.

    Yields False, holding nothing, in a module with `transaction=True` tests: they commit and
    flush, which they cannot do inside a transaction held open around them; shared rows must
    then be made per test. A dependent fixture must be requested by name (a parameter), never
    with `request.getfixturevalue` from a test's fixture: that would open this transaction
    inside the test's own.
    """
    from django.db import transaction

    if module_is_transactional(request):
        yield False
        return
    with django_db_blocker.unblock(), transaction.atomic():
        yield True
        transaction.set_rollback(True)


# The test being run in this process (setup, call and teardown), for the subprocess check.
_running: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.remove(item)


def pytest_configure(config: pytest.Config) -> None:
    _refuse_unmarked_subprocesses()


def _refuse_unmarked_subprocesses() -> None:
    """Fail a test that starts a subprocess without one of PROCESS_MARKERS.

    Every subprocess (subprocess.run, Popen, asyncio's, Playwright's driver) is created by
    `Popen._execute_child`, so wrapping it catches them all, from fixtures too. `pytest.fail`
    raises a BaseException: code under test that catches Exception cannot hide it.
    """
    execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    if getattr(execute_child, "jobsite_checked", False):
        return

    def checked(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
        for item in _running:
            if not any(item.get_closest_marker(name) for name in PROCESS_MARKERS):
                pytest.fail(
                    f"{item.nodeid} started a subprocess ({args!r:.200}) but is marked none of "
                    f"{', '.join(PROCESS_MARKERS)}: mark it (`process` for a command that ends "
                    "by itself) so that `make test-fast` leaves it out",
                    pytrace=False,
                )
        return execute_child(self, args, *rest, **kwargs)

    checked.jobsite_checked = True  # type: ignore[attr-defined]
    subprocess.Popen._execute_child = checked  # type: ignore[attr-defined]
