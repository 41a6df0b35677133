"""`manage.py runjob`: a manual run carries who ran it and why."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from scheduler.models import JobRun

pytestmark = pytest.mark.django_db


def test_runjob_records_the_reason_it_was_given():
    call_command("runjob", "live-stats-sync", "--sync", "--reason", "checking INC-42")
    run = JobRun.objects.get(job="live-stats-sync")
    assert run.reason.startswith("manage.py runjob by ")
    assert run.reason.endswith(": checking INC-42")


def test_runjob_refuses_a_reason_longer_than_the_ledger_keeps():
    with pytest.raises(CommandError, match="--reason is too long"):
        call_command("runjob", "live-stats-sync", "--sync", "--reason", "x" * 300)
    assert not JobRun.objects.exists()
