"""`schedules apply` upserts; staff edits survive; bad environment values name their variable."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from core.env import ConfigError
from jobsite.settings import scheduler_settings
from scheduler.audit import Actor
from scheduler.cron import Cron
from scheduler.models import JobSchedule
from scheduler.registry import all_jobs
from scheduler.services.schedules import check_stagger_environment
from scheduler.services.writes import crontab_for, schedules_apply

pytestmark = pytest.mark.django_db


def test_apply_creates_one_task_per_job_and_twice_changes_nothing():
    first = schedules_apply(actor=Actor.system("tests"), profile="production")
    rows = {
        t.name: (t.crontab_id, t.job_schedule.offset_seconds, t.last_run_at)
        for t in PeriodicTask.objects.select_related("job_schedule")
    }
    second = schedules_apply(actor=Actor.system("tests"), profile="production")

    assert {c.action for c in first} == {"created"}
    assert {c.action for c in second} == {"unchanged"}
    assert len(rows) == len(all_jobs())
    assert rows == {
        t.name: (t.crontab_id, t.job_schedule.offset_seconds, t.last_run_at)
        for t in PeriodicTask.objects.select_related("job_schedule")
    }


def test_apply_keeps_staff_edits_unless_reset():
    schedules_apply(actor=Actor.system("tests"), profile="production")
    task = PeriodicTask.objects.get(name="retention-pruning")
    task.crontab = crontab_for(Cron.parse("30 5 * * *"))
    task.enabled = False
    task.save()
    JobSchedule.objects.filter(periodic_task=task).update(offset_seconds=7)

    kept = {c.job: c for c in schedules_apply(actor=Actor.system("tests"), profile="production")}[
        "retention-pruning"
    ]
    task.refresh_from_db()
    assert str(Cron.from_model(task.crontab)) == "30 5 * * *"
    assert task.job_schedule.offset_seconds == 7
    assert not task.enabled
    assert "kept" in " ".join(kept.details)

    schedules_apply(actor=Actor.system("tests"), profile="production", reset=True)
    task = PeriodicTask.objects.select_related("job_schedule").get(name="retention-pruning")
    assert str(Cron.from_model(task.crontab)) == "0 4 * * *"
    assert task.job_schedule.offset_seconds == 55
    assert task.enabled


def test_the_test_profile_fires_every_job_every_minute_at_its_offset():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    for task in PeriodicTask.objects.select_related("crontab", "job_schedule"):
        assert str(Cron.from_model(task.crontab)) == "* * * * *"
    offsets = [t.job_schedule.offset_seconds for t in PeriodicTask.objects.all()]
    assert len(offsets) == len(set(offsets))


def stagger_offsets(settings, **offsets: int) -> None:
    stagger = replace(settings.SCHEDULER.stagger, offsets=offsets)
    settings.SCHEDULER = replace(settings.SCHEDULER, stagger=stagger)


def test_stagger_variable_sets_the_default_offset(monkeypatch, settings):
    # the variable is read by settings at start ...
    monkeypatch.setenv("JOB_STAGGER_RETENTION_PRUNING", "12")
    assert scheduler_settings().stagger.offsets == {"JOB_STAGGER_RETENTION_PRUNING": 12}
    # ... and apply writes what settings hold
    stagger_offsets(settings, JOB_STAGGER_RETENTION_PRUNING=12)
    schedules_apply(actor=Actor.system("tests"), profile="production")
    assert PeriodicTask.objects.get(name="retention-pruning").job_schedule.offset_seconds == 12


@pytest.mark.parametrize("value", ["60", "-1", "abc", "1000000000"])
def test_a_bad_stagger_value_is_an_error_naming_the_variable(monkeypatch, value):
    # settings refuse it at start (tests/test_foundation.py: the process stops with one line)
    monkeypatch.setenv("JOB_STAGGER_RETENTION_PRUNING", value)
    with pytest.raises(ConfigError, match="JOB_STAGGER_RETENTION_PRUNING"):
        scheduler_settings()


def test_a_bad_kill_switch_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("JOB_STAGGER_ENABLED", "maybe")
    with pytest.raises(ConfigError, match="JOB_STAGGER_ENABLED='maybe' is not a boolean"):
        scheduler_settings()


def test_an_unknown_job_variable_is_reported(settings):
    stagger_offsets(settings, JOB_STAGGER_NO_SUCH_JOB=3, JOB_STAGGER_RETENTION_PRUNING=12)
    assert check_stagger_environment() == [
        "JOB_STAGGER_NO_SUCH_JOB names no registered job (known: "
        + ", ".join(sorted(job.env_name for job in all_jobs()))
        + ")"
    ]


def test_system_check_reports_an_unknown_job_variable(settings):
    stagger_offsets(settings, JOB_STAGGER_RETENTION_PRUNNIG=12)
    with pytest.raises(Exception, match="JOB_STAGGER_RETENTION_PRUNNIG names no registered job"):
        call_command("check")


def test_schedules_commands_list_check_and_remove():
    out = io.StringIO()
    call_command("schedules", "apply", "--profile", "test", stdout=out)
    call_command("schedules", "list", "--profile", "test", stdout=out)
    assert "55 * * * * *" in out.getvalue()
    check = io.StringIO()
    call_command("schedules", "check", stdout=check)
    assert "peak simultaneous starts per second: 1" in check.getvalue()
    call_command("schedules", "remove", "retention-pruning", stdout=out)
    assert not PeriodicTask.objects.filter(name="retention-pruning").exists()
    with pytest.raises(CommandError, match="unknown job 'nope'"):
        call_command("schedules", "remove", "nope")


def test_a_row_beat_cannot_send_is_reported_by_check_and_the_system_check():
    from django.core.checks import run_checks

    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.filter(name="retention-pruning").update(kwargs="{bad json")
    out = io.StringIO()
    call_command("schedules", "check", stdout=out)
    assert "not sendable: retention-pruning: kwargs is not valid JSON" in out.getvalue()
    warnings = [m.msg for m in run_checks(databases=["default"]) if m.id == "scheduler.W003"]
    assert warnings == [
        "schedule 'retention-pruning' cannot be sent by beat: kwargs is not valid "
        "JSON (Expecting property name enclosed in double quotes at 1)"
    ]


def test_next_start_between_a_boundary_and_its_offset_is_that_boundarys_start():
    from datetime import UTC, datetime

    from scheduler.selectors import next_starts

    # Given an hourly job at :00 with offset 50, asked at 12:00:20 (boundary passed, start not)
    now = datetime(2026, 12, 7, 12, 0, 20, tzinfo=UTC)
    starts = next_starts(Cron.parse("0 * * * *"), 50, now=now, count=2)

    # then its next start is 12:00:50, not 13:00:50
    assert starts == [
        datetime(2026, 12, 7, 12, 0, 50, tzinfo=UTC),
        datetime(2026, 12, 7, 13, 0, 50, tzinfo=UTC),
    ]


def test_schedules_list_shows_the_start_still_due_this_minute():
    from datetime import timedelta

    from django.utils import timezone

    schedules_apply(actor=Actor.system("tests"), profile="test")
    JobSchedule.objects.filter(periodic_task__name="retention-pruning").update(offset_seconds=59)
    before = timezone.now()
    out = io.StringIO()
    call_command("schedules", "list", "--profile", "test", "--next", "1", stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("retention-pruning"))
    # Every minute at :59: the next start is this minute's unless this very second is :59.
    if before.second < 59 and timezone.now().minute == before.minute:
        expected = before.replace(second=59, microsecond=0)
    else:
        expected = (before + timedelta(minutes=1)).replace(second=59, microsecond=0)
    assert expected.strftime("%d %H:%M:%S") in line, line


def test_apply_makes_a_job_row_from_before_the_argument_rule_sendable_again():
    from django_celery_beat.models import IntervalSchedule

    from scheduler.services.schedules import broken_schedules

    schedules_apply(actor=Actor.system("tests"), profile="production")
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="settlement").update(kwargs='{"user_id": 7}', args="[1]")
    PeriodicTask.objects.filter(name="cleanup").update(interval=every, crontab=None)
    assert set(broken_schedules()) == {"settlement", "cleanup"}

    changes = {c.job: c for c in schedules_apply(actor=Actor.system("tests"), profile="production")}

    assert broken_schedules() == {}
    assert 'kwargs: {"user_id": 7} -> {} (a job takes none)' in changes["settlement"].details
    cleanup = PeriodicTask.objects.get(name="cleanup")
    assert (cleanup.interval_id, str(Cron.from_model(cleanup.crontab))) == (None, "0 3 * * *")


def test_broken_schedules_finds_each_kind_of_problem_and_nothing_else():
    from django_celery_beat.models import CrontabSchedule

    from scheduler.services.schedules import broken_schedules

    schedules_apply(actor=Actor.system("tests"), profile="test")
    (never,) = CrontabSchedule.objects.bulk_create(
        [CrontabSchedule(minute="0", hour="0", day_of_month="31", month_of_year="2")]
    )
    PeriodicTask.objects.filter(name="cleanup").update(crontab=never)
    PeriodicTask.objects.filter(name="settlement").update(task="no.such.task")
    PeriodicTask.objects.filter(name="badge-auto-unlock").update(headers="[]")
    PeriodicTask.objects.filter(name="live-stats-sync").update(kwargs="{ }")  # sound, unusual

    broken = broken_schedules()

    assert set(broken) == {"cleanup", "settlement", "badge-auto-unlock"}
    assert "never fires" in broken["cleanup"][0]
