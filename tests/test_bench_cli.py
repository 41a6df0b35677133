"""`make bench` refuses a database it cannot use with one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.scheduler.processes import test_environment as subprocess_environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.process
@pytest.mark.django_db
def test_a_database_url_naming_a_missing_database_is_one_line():
    db = connection.settings_dict
    missing = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/jobsite_bench_missing"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "scheduler", "--only", "overhead", "--rounds", "1"],
        cwd=ROOT,
        env=subprocess_environment(DATABASE_URL=missing, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("bench: ")]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("bench: DATABASE_URL cannot be used")
    assert '"jobsite_bench_missing" does not exist' in said[0]
