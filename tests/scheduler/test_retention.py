"""retention-pruning deletes old ledger rows and task results in batches, by status age, without
breaking a reference to a row it keeps and without wedging on one row it cannot delete."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from monitoring.models import Incident
from scheduler.budget import Budget
from scheduler.conf import RetentionSettings
from scheduler.locks import lease_acquire
from scheduler.models import JobLease, JobRun
from scheduler.registry import get_job
from scheduler.services import retention
from scheduler.services.retention import retention_prune
from tests.scheduler.conftest import close_other_connections

Status = JobRun.Status
pytestmark = pytest.mark.django_db
committed = pytest.mark.django_db(transaction=True)  # foreign keys are checked at real COMMITs
ZERO = {"undeletable": 0, "backlog": 0}


def _run(age: timedelta, status: str, **extra) -> JobRun:
    now = timezone.now()
    return JobRun.objects.create(
        job="sample-noop", slot=now - age, status=status, finished_at=now - age, **extra
    )


def _old_runs(count: int, *, first_id: int | None = None, days: int = 8) -> list[JobRun]:
    moment = timezone.now() - timedelta(days=days)
    rows = [
        JobRun(
            job="sample-noop",
            slot=moment - timedelta(seconds=n),
            status=Status.SUCCEEDED,
            finished_at=moment,
            **({"id": first_id + n} if first_id is not None else {}),
        )
        for n in range(count)
    ]
    return JobRun.objects.bulk_create(rows)


def _runjob() -> JobRun:
    """`manage.py runjob retention-pruning --sync`, as the issue's reproductions ran it."""
    call_command("runjob", "retention-pruning", "--sync", stdout=io.StringIO())
    return JobRun.objects.filter(job="retention-pruning").latest("id")


@pytest.fixture
def no_stray_connections() -> Iterator[None]:
    yield
    close_other_connections()  # the lease renewer's own connection


class _Batches(Budget):
    """A budget spent after `batches` looks: the test decides where a run stops."""

    def __init__(self, batches: int) -> None:
        super().__init__(seconds=60)
        self.looks_left = batches

    @property
    def spent(self) -> bool:
        self.looks_left -= 1
        return self.looks_left < 0


# ---------------------------------------------------------------------------------------------
# Ages
# ---------------------------------------------------------------------------------------------


def test_old_rows_go_by_status_age_and_recent_or_unfinished_ones_stay(monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 2)  # several batches
    old_ok = [_run(timedelta(days=8, seconds=n), Status.SUCCEEDED) for n in range(5)]
    old_failed = _run(timedelta(days=8), Status.FAILED)
    very_old_failed = _run(timedelta(days=31), Status.FAILED)
    recent = _run(timedelta(days=1), Status.SUCCEEDED)
    running = JobRun.objects.create(
        job="sample-noop", slot=timezone.now() - timedelta(days=9), status=Status.RUNNING
    )
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.create(task_id="new", status="SUCCESS")
    # date_done is auto_now: age the old one afterwards.
    TaskResult.objects.filter(task_id="old").update(date_done=timezone.now() - timedelta(days=8))

    counts = retention_prune(now=timezone.now())

    left = set(JobRun.objects.values_list("pk", flat=True))
    assert counts == {"runs_deleted": 6, "results_deleted": 1, **ZERO}
    assert left == {old_failed.pk, recent.pk, running.pk}
    assert not any(run.pk in left for run in [*old_ok, very_old_failed])
    assert list(TaskResult.objects.values_list("task_id", flat=True)) == ["new"]


def test_pruning_twice_changes_nothing_the_second_time():
    _run(timedelta(days=8), Status.SUCCEEDED)
    retention_prune(now=timezone.now())
    assert retention_prune(now=timezone.now()) == {
        "runs_deleted": 0,
        "results_deleted": 0,
        **ZERO,
    }


def test_the_test_profile_keeps_runs_for_an_hour(monkeypatch, settings):
    from jobsite.settings import scheduler_settings

    monkeypatch.setenv("JOBSITE_PROFILE", "test")
    settings.SCHEDULER = scheduler_settings()  # as a process started with it would read it
    assert settings.SCHEDULER.retention == RetentionSettings(
        succeeded_seconds=3600, failed_seconds=86400
    )
    gone = _run(timedelta(hours=2), Status.SUCCEEDED)
    kept_failed = _run(timedelta(hours=2), Status.FAILED)

    retention_prune(now=timezone.now())

    assert list(JobRun.objects.values_list("pk", flat=True)) == [kept_failed.pk]
    assert gone.pk != kept_failed.pk


def test_an_unknown_profile_is_an_error_naming_the_variable(monkeypatch):
    from core.env import ConfigError
    from jobsite.settings import scheduler_settings

    monkeypatch.setenv("JOBSITE_PROFILE", "staging")
    with pytest.raises(ConfigError, match="JOBSITE_PROFILE='staging'"):
        scheduler_settings()


def test_retention_variables_override_the_profile_defaults(monkeypatch):
    from jobsite.settings import scheduler_settings

    monkeypatch.setenv("JOBSITE_PROFILE", "test")
    monkeypatch.setenv("RETENTION_FAILED_SECONDS", "7200")
    assert scheduler_settings().retention == RetentionSettings(
        succeeded_seconds=3600, failed_seconds=7200
    )


# ---------------------------------------------------------------------------------------------
# Duplicates and their owners (issue 17, item 1)
# ---------------------------------------------------------------------------------------------


@committed
def test_issue_17_owner_and_duplicate_at_the_real_batch_edge(no_stray_connections):
    # given 4,999 old succeeded rows, then an owner and its duplicate, all 8 days old: the owner
    # is the 5,000th row of the first batch and its duplicate the first of the second
    _old_runs(retention.BATCH - 1)
    owner = _run(timedelta(days=8), Status.SUCCEEDED)
    _run(timedelta(days=8), Status.DUPLICATE, duplicate_of=owner)

    # when the job runs as an operator would run it
    run = _runjob()

    # then it succeeds, every old row is gone, and the next run finds nothing to do
    assert run.status == Status.SUCCEEDED, run.error
    assert run.result == {"runs_deleted": retention.BATCH + 1, "results_deleted": 0, **ZERO}
    assert list(JobRun.objects.values_list("job", flat=True)) == ["retention-pruning"]
    # (called directly: a second runjob within the same second would be that slot's duplicate)
    assert retention_prune(now=timezone.now())["runs_deleted"] == 0


@committed
@pytest.mark.parametrize("duplicate_first", [False, True], ids=["owner-first", "duplicate-first"])
def test_owner_and_duplicate_on_both_sides_of_a_batch_edge(monkeypatch, duplicate_first):
    monkeypatch.setattr(retention, "BATCH", 2)
    # given rows in this physical order (explicit ids; the duplicate may come before its owner,
    # which the deferred foreign key allows within one transaction):
    #   owner-first:     old, owner | duplicate
    #   duplicate-first: old, duplicate | owner
    base = 10_000_000
    owner_id, duplicate_id = (base + 3, base + 2) if duplicate_first else (base + 2, base + 3)
    moment = timezone.now() - timedelta(days=8)
    common = {"job": "sample-noop", "slot": moment, "finished_at": moment}
    rows = {
        base + 1: JobRun(
            id=base + 1, status=Status.SUCCEEDED, **{**common, "slot": moment - timedelta(1)}
        ),
        owner_id: JobRun(id=owner_id, status=Status.SUCCEEDED, **common),
        duplicate_id: JobRun(
            id=duplicate_id, status=Status.DUPLICATE, duplicate_of_id=owner_id, **common
        ),
    }
    JobRun.objects.bulk_create([rows[pk] for pk in sorted(rows)])

    counts = retention_prune(now=timezone.now())

    assert counts == {"runs_deleted": 3, "results_deleted": 0, **ZERO}
    assert not JobRun.objects.exists()


@committed
def test_an_owner_stays_while_its_duplicate_is_young_and_goes_with_it_later(monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 1)
    # a slot owned 8 days ago, asked again 2 days ago (a redelivery long after the run)
    owner = _run(timedelta(days=8), Status.SUCCEEDED)
    young = _run(timedelta(days=2), Status.DUPLICATE, duplicate_of=owner)

    assert retention_prune(now=timezone.now())["runs_deleted"] == 0
    assert set(JobRun.objects.values_list("pk", flat=True)) == {owner.pk, young.pk}

    counts = retention_prune(now=timezone.now() + timedelta(days=6))
    assert counts == {"runs_deleted": 2, "results_deleted": 0, **ZERO}


# ---------------------------------------------------------------------------------------------
# Lease holders (issue 17, item 2)
# ---------------------------------------------------------------------------------------------


@committed
def test_issue_17_a_lease_naming_a_40_day_old_lost_run(no_stray_connections):
    # given a lease whose holder is a 40-day-old lost run (only a success or a later acquisition
    # clears it), and unrelated old rows
    lost = _run(timedelta(days=40), Status.LOST)
    JobLease.objects.create(
        job="sample-noop", token=7, holder=lost, expires_at=timezone.now() - timedelta(days=40)
    )
    _old_runs(3)

    run = _runjob()

    # then the job succeeds, the lost run and the others are gone, and the lease is free
    # with its token kept (fencing goes on counting from it)
    assert run.status == Status.SUCCEEDED, run.error
    assert run.result == {"runs_deleted": 4, "results_deleted": 0, **ZERO}
    lease = JobLease.objects.get(job="sample-noop")
    assert (lease.holder_id, lease.token) == (None, 7)
    newer = _run(timedelta(0), Status.RUNNING)
    taken = lease_acquire(job="sample-noop", run_id=newer.pk, ttl=60)
    assert taken is not None
    assert taken.token == 8


@committed
def test_a_run_still_named_by_an_unexpired_lease_is_kept_until_it_expires():
    old = _run(timedelta(days=8), Status.FAILED)
    other = _run(timedelta(days=31), Status.FAILED)
    JobLease.objects.create(
        job="sample-noop", token=3, holder=old, expires_at=timezone.now() + timedelta(hours=1)
    )

    counts = retention_prune(now=timezone.now() + timedelta(days=30))

    assert counts["runs_deleted"] == 1
    assert list(JobRun.objects.values_list("pk", flat=True)) == [old.pk]
    assert JobLease.objects.get(job="sample-noop").holder_id == old.pk
    assert other.pk != old.pk


# ---------------------------------------------------------------------------------------------
# Incidents refer to runs by id and keep their own copy
# ---------------------------------------------------------------------------------------------


def test_an_incident_keeps_its_story_when_its_runs_are_pruned(admin_client):
    first = _run(timedelta(days=31, minutes=5), Status.FAILED)
    last = _run(timedelta(days=31), Status.FAILED)
    incident = Incident.objects.create(
        job="sample-noop",
        kind=Incident.Kind.FAILURES,
        opened_at=last.finished_at,
        first_run_id=first.pk,
        first_slot=first.slot,
        last_run_id=last.pk,
        last_slot=last.slot,
        occurrences=2,
        summary="sample-noop failed 2 times in a row",
        detail="boom",
    )

    assert retention_prune(now=timezone.now())["runs_deleted"] == 2

    incident.refresh_from_db()
    assert (incident.first_slot, incident.last_slot) == (first.slot, last.slot)
    assert (incident.summary, incident.detail, incident.occurrences) == (
        "sample-noop failed 2 times in a row",
        "boom",
        2,
    )
    page = admin_client.get(reverse("admin:monitoring_incident_change", args=[incident.pk]))
    assert page.status_code == 200
    assert f"#{first.pk} (pruned)" in page.content.decode()


# ---------------------------------------------------------------------------------------------
# Time budget and backlog
# ---------------------------------------------------------------------------------------------


def test_a_spent_budget_stops_the_run_with_its_backlog_and_the_next_run_finishes(monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 2)
    _old_runs(5)
    TaskResult.objects.create(task_id="old", status="SUCCESS")
    TaskResult.objects.filter(task_id="old").update(date_done=timezone.now() - timedelta(days=8))

    # a budget that lasts one batch: the duplicates pass looks once (nothing), the runs pass
    # deletes one batch, then it is spent
    first = retention_prune(now=timezone.now(), budget=_Batches(2))
    assert first == {"runs_deleted": 2, "results_deleted": 0, "undeletable": 0, "backlog": 4}
    assert JobRun.objects.count() == 3

    second = retention_prune(now=timezone.now())
    assert second == {"runs_deleted": 3, "results_deleted": 1, **ZERO}


def test_the_backlog_is_a_count_bounded_by_its_cap(monkeypatch):
    monkeypatch.setattr(retention, "BACKLOG_CAP", 3)
    _old_runs(5)
    assert retention_prune(now=timezone.now(), budget=Budget(0))["backlog"] == 3


def test_the_job_gives_the_service_a_budget_below_its_soft_limit():
    job = get_job("retention-pruning")
    assert 0 < job.budget < job.soft_time_limit < job.time_limit
    _old_runs(2)
    assert job.run_service(now=timezone.now()) == {
        "runs_deleted": 2,
        "results_deleted": 0,
        **ZERO,
    }


# ---------------------------------------------------------------------------------------------
# Poison: a row that cannot be deleted never stops the rest
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def unknown_table() -> Iterator[Callable[[str], str]]:
    """Make a table retention does not know about, with a foreign key to the ledger."""
    made: list[str] = []

    def make(references: str) -> str:
        name = f"test_unknown_{len(made)}"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE {name} (run_id bigint REFERENCES {references})")
        made.append(name)
        return name

    yield make
    with connection.cursor() as cursor:
        for name in made:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")


@committed
@pytest.mark.parametrize("batch", [4, 5000])
def test_a_row_referenced_from_an_unknown_table_is_left_and_the_rest_go(
    monkeypatch, unknown_table, no_stray_connections, batch
):
    # a foreign key as Django makes them (checked at COMMIT, where one row used to fail the
    # whole batch)
    foreign_table = unknown_table("scheduler_jobrun (id) DEFERRABLE INITIALLY DEFERRED")
    monkeypatch.setattr(retention, "BATCH", batch)
    poison, *healthy = _old_runs(10)  # the poisoned row first in line
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {foreign_table} VALUES (%s)", [poison.pk])

    run = _runjob()

    assert run.status == Status.SUCCEEDED, run.error
    assert run.result == {"runs_deleted": 9, "results_deleted": 0, "undeletable": 1, "backlog": 1}
    assert set(JobRun.objects.filter(job="sample-noop").values_list("pk", flat=True)) == {poison.pk}
    assert not any(JobRun.objects.filter(pk=row.pk).exists() for row in healthy)


def _other_connection() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        host=settings["HOST"],
        port=settings["PORT"] or None,
    )


@committed
def test_a_row_locked_by_another_transaction_is_skipped_and_goes_next_time():
    locked, *_healthy = _old_runs(4)
    other = _other_connection()
    try:
        other.execute("SELECT 1 FROM scheduler_jobrun WHERE id = %s FOR UPDATE", [locked.pk])

        counts = retention_prune(now=timezone.now())

        assert counts == {"runs_deleted": 3, "results_deleted": 0, "undeletable": 0, "backlog": 1}
        assert list(JobRun.objects.values_list("pk", flat=True)) == [locked.pk]
    finally:
        other.rollback()
        other.close()
    assert retention_prune(now=timezone.now())["runs_deleted"] == 1


@committed
def test_a_row_whose_delete_waits_on_a_lock_is_left_after_the_lock_timeout(
    monkeypatch, unknown_table
):
    # given an unknown table that cascades from the ledger, and another transaction holding the
    # row that deleting the first old run would have to delete with it
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "200ms")
    monkeypatch.setattr(retention, "BATCH", 4)
    blocked, *_healthy = _old_runs(6)
    tags = unknown_table("scheduler_jobrun (id) ON DELETE CASCADE")
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {tags} VALUES (%s)", [blocked.pk])
    other = _other_connection()
    try:
        other.execute(f"SELECT 1 FROM {tags} FOR UPDATE")

        counts = retention_prune(now=timezone.now())

        # then the others are deleted and the blocked one is left for a later run
        assert counts == {"runs_deleted": 5, "results_deleted": 0, "undeletable": 1, "backlog": 1}
        assert list(JobRun.objects.values_list("pk", flat=True)) == [blocked.pk]
    finally:
        other.rollback()
        other.close()
    assert retention_prune(now=timezone.now())["runs_deleted"] == 1


@committed
def test_a_budget_spent_while_splitting_a_batch_leaves_the_rest_due(monkeypatch, unknown_table):
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "200ms")
    monkeypatch.setattr(retention, "BATCH", 4)
    blocked, *_healthy = _old_runs(4)
    tags = unknown_table("scheduler_jobrun (id) ON DELETE CASCADE")
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {tags} VALUES (%s)", [blocked.pk])
    other = _other_connection()
    try:
        other.execute(f"SELECT 1 FROM {tags} FOR UPDATE")
        # the budget lasts for the duplicates pass and one batch of runs, whose delete waits
        counts = retention_prune(now=timezone.now(), budget=_Batches(2))
    finally:
        other.rollback()
        other.close()

    assert counts == {"runs_deleted": 0, "results_deleted": 0, "undeletable": 0, "backlog": 4}
    assert retention_prune(now=timezone.now())["runs_deleted"] == 4
