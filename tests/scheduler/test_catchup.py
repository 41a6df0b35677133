"""Late runs start at their job's own second, one per second (scheduler.services.catchup).

Real PostgreSQL; beat's entries are built as beat builds them. The same with a real beat and
worker after a 3-minute outage: tests/scheduler/test_overtaken_e2e.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask

from jobsite.celery import app
from scheduler.audit import Actor
from scheduler.models import CatchUpStart
from scheduler.schedulers import JobEntry
from scheduler.services.catchup import _Plans, catch_up_start, regular_starts
from scheduler.services.writes import schedules_apply

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _fresh_plans():
    _Plans.forget()  # each test applies its own schedules
    yield
    _Plans.forget()


def _entries() -> dict[str, JobEntry]:
    """Every enabled schedule as beat's entry (beat itself loads only those due within the hour)."""
    models = PeriodicTask.objects.filter(enabled=True).select_related("crontab", "job_schedule")
    return {model.name: JobEntry(model, app=app) for model in models}


def _late(name: str, slot: datetime, now: datetime, *, offset: int, beat: bool = True, **kw):
    return catch_up_start(
        schedule_name=name,
        job_name=name,
        offset=offset,
        slot=slot,
        deadline=kw.get("deadline", HOUR),
        now=now,
        beat_running=beat,
    )


def test_beat_starting_after_a_daily_slot_sends_it_at_the_jobs_own_second():
    # given the production schedules and beat starting at 00:03:10, after the 00:00:50 slot
    schedules_apply(actor=Actor.system("tests"), profile="production")
    entry = _entries()["prize-pool-finalisation"]
    now = datetime(2026, 11, 24, 0, 3, 10, 200_000, tzinfo=UTC)
    assert not regular_starts(datetime(2026, 11, 24, 0, 3, 50, tzinfo=UTC))

    # when beat sends the overdue entry
    prepared = entry.prepared(now)

    # then it keeps its slot and starts at :50 of this minute, not at once
    assert prepared.kwargs["slot"] == "2026-11-24T00:00:50+00:00"
    assert prepared.options["countdown"] == pytest.approx(39.8)
    assert prepared.options["expires"] == datetime(2026, 11, 24, 6, 0, 50, tzinfo=UTC)
    assert CatchUpStart.objects.get().second == datetime(2026, 11, 24, 0, 3, 50, tzinfo=UTC)


def test_an_every_minute_jobs_catch_up_starts_at_the_soonest_free_second():
    # every job every minute, offsets of their own
    schedules_apply(actor=Actor.system("tests"), profile="test")
    entry = _entries()["scheduled-notifications"]  # :30
    now = datetime(2026, 11, 23, 12, 0, 40, tzinfo=UTC)  # its 12:00:30 slot passed 10 s ago

    # its own second next is 12:01:30, where its own next run starts: the catch-up goes at the
    # soonest second no regular start takes instead
    prepared = entry.prepared(now)

    start = now + timedelta(seconds=prepared.options["countdown"])
    assert prepared.kwargs["slot"] == "2026-11-23T12:00:30+00:00"
    assert now + timedelta(seconds=1) <= start < datetime(2026, 11, 23, 12, 1, 30, tzinfo=UTC)
    assert not regular_starts(start)
    # a send a few seconds late (a slow tick) still goes at once, as before
    assert entry.prepared(now - timedelta(seconds=7)).options["countdown"] == 0


def test_a_restart_spreads_every_late_run_over_free_seconds():
    # given the production schedules and beat starting at 12:00:50, every slot of the 12:00
    # boundary with an offset below :45 already passed
    schedules_apply(actor=Actor.system("tests"), profile="production")
    now = datetime(2026, 11, 23, 12, 0, 50, tzinfo=UTC)

    # when beat sends every overdue entry
    sent = [e.prepared(now) for e in _entries().values() if e.job is not None]
    starts = {
        e.name: (now + timedelta(seconds=e.options["countdown"]), e.kwargs["slot"])
        for e in sent
        if e is not None
    }

    # then late runs never share a second, with each other or with a regular start
    late = [start for start, slot in starts.values() if start.isoformat() != slot]
    assert len(late) >= 3, starts
    assert len({s.replace(microsecond=0) for s in late}) == len(late)
    for start in late:
        names = regular_starts(start)
        assert not names, (start, names)


def test_two_late_runs_wanting_one_second_take_the_next_free_one():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    now = datetime(2026, 11, 23, 12, 0, 20, tzinfo=UTC)
    slot = datetime(2026, 11, 23, 11, 30, 30, tzinfo=UTC)
    first = _late("a", slot, now, offset=30, beat=False)
    second = _late("b", slot, now, offset=30, beat=False)

    assert first == datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
    assert second == first + timedelta(seconds=1)
    # while beat runs, seconds where a regular slot starts (test profile: every job's offset)
    # are passed over too
    third = _late("c", slot, now, offset=30, beat=True)
    assert third > second
    assert not regular_starts(third)


def test_a_late_run_whose_own_second_is_past_its_deadline_goes_sooner_or_not_at_all():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    now = datetime(2026, 11, 23, 12, 0, 20, tzinfo=UTC)
    slot = datetime(2026, 11, 23, 11, 59, 50, tzinfo=UTC)

    # own second 12:00:50 is past 11:59:50 + 55 s: the soonest free second instead
    soon = _late("a", slot, now, offset=50, beat=False, deadline=timedelta(seconds=55))
    assert soon == now + timedelta(seconds=1)
    # nothing free before the deadline: not sent
    assert _late("b", slot, now, offset=50, beat=False, deadline=timedelta(seconds=30)) is None
    assert _late("c", slot, now, offset=50, beat=False, deadline=HOUR) == slot + timedelta(
        minutes=1
    )


def test_old_reservations_are_pruned():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    now = datetime(2026, 11, 23, 12, 0, 20, tzinfo=UTC)
    slot = now - timedelta(minutes=5)
    _late("a", slot, now - 2 * HOUR, offset=30, beat=False)

    _late("b", slot, now, offset=31, beat=False)

    assert list(CatchUpStart.objects.values_list("job", flat=True)) == ["b"]


def test_the_reconcilers_resend_starts_at_the_jobs_own_second():
    # given sample-noop (every minute at :03, deadline 300 s) with no run for 12 minutes and beat
    # down (no heartbeat): no regular run will come
    from scheduler.models import JobRun, JobSchedule
    from scheduler.services.reconcile import ledger_reconcile

    schedules_apply(actor=Actor.system("tests"), profile="test")
    PeriodicTask.objects.exclude(name="sample-noop").update(enabled=False)
    now = datetime.now(UTC)
    JobSchedule.objects.filter(periodic_task__name="sample-noop").update(
        offset_seconds=3, tracked_since=now - timedelta(minutes=12)
    )

    # when the reconciler re-sends the newest slot
    assert ledger_reconcile(now=now)["redispatched"] == 1

    # then its start second is reserved at the soonest free second, not at its own :03, where
    # its own regular run starts should beat be back by then (issue 16's outage test saw both
    # start in that second after a restart), and said
    start = CatchUpStart.objects.get(job="sample-noop")
    assert now < start.second <= now + timedelta(seconds=3)
    assert "sample-noop" not in regular_starts(start.second)
    run = JobRun.objects.get(status=JobRun.Status.QUEUED)
    assert run.slot == start.slot
    assert f"starts at {start.second:%H:%M:%S}" in run.reason


def test_a_slot_already_sent_late_is_not_sent_again():
    schedules_apply(actor=Actor.system("tests"), profile="test")
    now = datetime(2026, 11, 23, 12, 0, 20, tzinfo=UTC)
    slot = now - timedelta(minutes=5)

    assert _late("a", slot, now, offset=30, beat=False)
    assert _late("a", slot, now + timedelta(seconds=2), offset=30, beat=False) is None


def test_a_second_given_back_after_a_refused_send_lets_the_slot_go_late_again():
    from scheduler.services.catchup import catch_up_release

    schedules_apply(actor=Actor.system("tests"), profile="test")
    now = datetime(2026, 11, 23, 12, 0, 20, tzinfo=UTC)
    slot = now - timedelta(minutes=5)
    second = _late("a", slot, now, offset=30, beat=False)

    catch_up_release(second=second, job_name="a", slot=slot)  # the broker refused the message

    assert _late("a", slot, now + timedelta(seconds=5), offset=30, beat=False) == second
