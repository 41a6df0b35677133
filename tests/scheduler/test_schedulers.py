"""Beat's scheduler: the entry's send options, bad rows, and the crontab window of beat 2.9."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat import schedulers as beat_schedulers
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from jobsite.celery import app
from scheduler.audit import Actor
from scheduler.cron import Cron
from scheduler.models import JobSchedule
from scheduler.schedulers import JobScheduler
from scheduler.services.writes import schedules_apply

pytestmark = pytest.mark.django_db


def _scheduler() -> JobScheduler:
    return JobScheduler(app=app, lazy=True)


def _entry(name: str):
    return _scheduler().all_as_schedule()[name]


def test_an_entry_sends_with_countdown_to_its_slot_expiry_and_headers():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    entry = _entry("retention-pruning")
    sent_at = datetime(2026, 11, 23, 12, 0, 0, 120_000, tzinfo=UTC)

    prepared = entry.prepared(sent_at)

    slot = datetime(2026, 11, 23, 12, 0, 55, tzinfo=UTC)
    assert prepared.options["countdown"] == pytest.approx(54.88)
    assert prepared.options["expires"] == slot + timedelta(seconds=entry.job.starting_deadline)
    assert prepared.options["expires"] > slot
    assert prepared.options["headers"]["job"] == "retention-pruning"
    assert prepared.options["headers"]["slot"] == slot.isoformat()
    assert prepared.kwargs == {"slot": slot.isoformat(), "trigger": "beat"}
    assert prepared.options["queue"] == "long"
    assert "countdown" not in entry.options  # the stored entry is not changed


def test_a_send_a_few_ms_before_the_boundary_belongs_to_the_coming_minute():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    prepared = _entry("retention-pruning").prepared(
        datetime(2026, 11, 23, 11, 59, 59, 990_000, tzinfo=UTC)
    )
    assert prepared.kwargs["slot"] == "2026-11-23T12:00:55+00:00"


def test_the_kill_switch_sends_every_job_at_the_boundary(settings):
    schedules_apply(actor=Actor.system("tests"), profile="test")
    stagger = replace(settings.SCHEDULER.stagger, enabled=False)
    settings.SCHEDULER = replace(settings.SCHEDULER, stagger=stagger)
    prepared = _entry("retention-pruning").prepared(datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC))
    assert prepared.options["countdown"] == 0
    assert prepared.kwargs["slot"] == "2026-11-23T12:00:00+00:00"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("kwargs", "{bad json", "kwargs is not valid JSON"),
        ("args", '{"not": "a list"}', "args must be a JSON list"),
        ("task", "no.such.task", "is not registered"),
    ],
)
def test_a_bad_row_is_left_out_and_the_others_still_load(field, value, problem, caplog):
    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.filter(name="retention-pruning").update(**{field: value})
    PeriodicTask.objects.create(
        name="healthy", task="scheduler.ping", crontab=CrontabSchedule.objects.first()
    )

    loaded = _scheduler().all_as_schedule()

    assert "retention-pruning" not in loaded
    assert "healthy" in loaded
    assert problem in caplog.text
    assert PeriodicTask.objects.get(name="retention-pruning").enabled  # reported, not rewritten


@pytest.mark.parametrize(("minute", "day_of_month", "month"), [("99", "*", "*"), ("0", "31", "2")])
def test_an_impossible_cron_written_to_the_database_is_left_out(minute, day_of_month, month):
    schedules_apply(actor=Actor.system("tests"), profile="test")
    # Written around the model (as raw SQL or another program would): bulk_create skips save().
    (bad,) = CrontabSchedule.objects.bulk_create(
        [CrontabSchedule(minute=minute, hour="0", day_of_month=day_of_month, month_of_year=month)]
    )
    PeriodicTask.objects.filter(name="retention-pruning").update(crontab=bad)
    PeriodicTask.objects.create(
        name="healthy",
        task="scheduler.ping",
        crontab=CrontabSchedule.objects.exclude(pk=bad.pk).first(),
    )

    loaded = _scheduler().all_as_schedule()

    assert "retention-pruning" not in loaded
    assert "healthy" in loaded


@pytest.mark.parametrize("hour", [0, 2, 3, 4, 11, 23])
def test_every_job_due_within_the_hour_is_loaded_at_any_time_of_day(hour, monkeypatch):
    schedules_apply(actor=Actor.system("tests"), profile="production")
    moment = datetime(2026, 11, 23, hour, 58, 30, tzinfo=UTC)
    monkeypatch.setattr(beat_schedulers, "aware_now", lambda: moment)
    monkeypatch.setattr(beat_schedulers, "now", lambda: moment)

    loaded = set(_scheduler().all_as_schedule())

    for task in PeriodicTask.objects.select_related("crontab"):
        upcoming = Cron.from_model(task.crontab).next_fire_times(moment, 1)[0]
        if upcoming - moment <= timedelta(hours=1):
            assert task.name in loaded, (task.name, moment)


def test_an_offset_outside_0_59_is_refused_by_the_database():
    from django.db import IntegrityError

    schedules_apply(actor=Actor.system("tests"), profile="test")
    with pytest.raises(IntegrityError, match="jobschedule_offset_0_59"):
        JobSchedule.objects.update(offset_seconds=60)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minute": "61"}, "minute '61' is invalid"),
        ({"minute": "0", "hour": "0", "day_of_month": "31", "month_of_year": "2"}, "never fires"),
    ],
)
def test_the_orm_refuses_an_impossible_cron(fields, message):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=message):
        CrontabSchedule.objects.create(**fields)
    assert not CrontabSchedule.objects.filter(**fields).exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kwargs": "{bad json"}, "kwargs is not valid JSON"),
        ({"args": '{"a": 1}'}, "args must be a JSON list"),
        ({"task": "no.such.task"}, "is not registered"),
    ],
)
def test_the_orm_refuses_a_periodic_task_beat_could_not_send(fields, message):
    from django.core.exceptions import ValidationError

    crontab = CrontabSchedule.objects.create(minute="*")
    with pytest.raises(ValidationError, match=message):
        PeriodicTask.objects.create(
            name="bad", task=fields.pop("task", "scheduler.ping"), crontab=crontab, **fields
        )
    assert not PeriodicTask.objects.filter(name="bad").exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"interval": True}, "crontab is required"),
        ({"kwargs": '{"slot": "2026-12-07T00:00:50+00:00", "trigger": "manual"}'}, "slot, trigger"),
        ({"kwargs": '{"user_id": 1, "reason": "mine"}'}, "kwargs name reason, user_id"),
        ({"kwargs": '{"pool": 3}'}, "takes no arguments of its own"),
        ({"args": "[1]"}, "takes no positional arguments"),
    ],
)
def test_a_job_schedule_off_cron_or_speaking_for_the_run_path_is_refused_and_left_out(
    fields, message
):
    from django.core.exceptions import ValidationError
    from django_celery_beat.models import IntervalSchedule

    schedules_apply(actor=Actor.system("tests"), profile="test")
    if fields.pop("interval", False):
        every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
        fields = {"interval": every, "crontab": None}
    task = PeriodicTask.objects.get(name="prize-pool-finalisation")
    for name, value in fields.items():
        setattr(task, name, value)

    # given every interface saves through the model (admin form, API, shell): refused at save
    with pytest.raises(ValidationError, match=message):
        task.save()
    # when the same row is written around the model, beat leaves it out and staff are told
    PeriodicTask.objects.filter(pk=task.pk).update(**fields)
    assert "prize-pool-finalisation" not in _scheduler().all_as_schedule()
    from scheduler.services.schedules import broken_schedules

    assert message in "; ".join(broken_schedules()["prize-pool-finalisation"])


def test_beat_records_a_send_on_a_row_poisoned_after_it_was_loaded():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    scheduler = _scheduler()
    entry = scheduler.reserve(scheduler.all_as_schedule()["cleanup"])  # what a send does
    PeriodicTask.objects.filter(name="cleanup").update(kwargs="{bad json", args='{"a": 1}')

    entry.save()  # django-celery-beat's save re-validated the row and raised ValidationError

    row = PeriodicTask.objects.get(name="cleanup")
    assert row.total_run_count == entry.total_run_count == 1
    assert row.last_run_at == entry.last_run_at
    assert row.kwargs == "{bad json"  # left as found, for staff to see and fix


@pytest.mark.django_db(transaction=True)  # beat's resync commits and closes old connections
def test_the_forced_resync_survives_rows_poisoned_after_they_were_sent():
    import datetime as dt

    schedules_apply(actor=Actor.system("tests"), profile="test")
    scheduler = _scheduler()
    loaded = scheduler.schedule  # the initial read
    for name in ("cleanup", "settlement", "badge-auto-unlock"):
        scheduler.reserve(loaded[name])  # sent: dirty until the next sync
    PeriodicTask.objects.filter(name="cleanup").update(kwargs="{bad json")
    PeriodicTask.objects.filter(name="settlement").update(args='{"a": 1}')
    PeriodicTask.objects.filter(name="badge-auto-unlock").update(task="no.such.task")
    # django-celery-beat's own resync, 5 minutes after the last one
    scheduler._last_full_sync = dt.datetime.now() - dt.timedelta(minutes=6)  # noqa: DTZ005

    resynced = scheduler.schedule

    assert {"cleanup", "settlement", "badge-auto-unlock"}.isdisjoint(resynced)
    assert set(loaded) - set(resynced) == {"cleanup", "settlement", "badge-auto-unlock"}
    assert PeriodicTask.objects.get(name="settlement").total_run_count == 1  # the sync wrote it
