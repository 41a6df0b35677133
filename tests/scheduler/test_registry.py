import pytest

from scheduler.registry import Job, RegistryError, RetryPolicy, all_jobs, get_job, register
from tests.scheduler.sample_jobs import noop

DEFAULT_TABLE = {
    "referral-tier2": ("* * * * *", 0),
    "badge-auto-unlock": ("*/5 * * * *", 5),
    "stuck-session-finisher": ("*/10 * * * *", 10),
    "referral-tier3": ("* * * * *", 15),
    "leaderboard-ranking": ("0 * * * *", 20),
    "prediction-matcher": ("*/5 * * * *", 25),
    "scheduled-notifications": ("* * * * *", 30),
    "cleanup": ("0 3 * * *", 35),
    "settlement": ("*/10 * * * *", 40),
    "live-stats-sync": ("* * * * *", 45),
    "prize-pool-finalisation": ("0 0 * * *", 50),
    "retention-pruning": ("0 4 * * *", 55),
}


def _job(**overrides):
    fields = {
        "name": "x-job",
        "task": "tests.x",
        "service": noop,
        "cron": "* * * * *",
        "offset": 0,
        "description": "x",
    }
    fields.update(overrides)
    return Job(**fields)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Bad_Name", "not kebab-case"),
        ("task", "nodots", "explicit dotted name"),
        ("cron", "* * *", "5 fields"),
        ("offset", 60, "outside 0..59"),
        ("offset", -1, "outside 0..59"),
        ("queue", "fast", "not one of"),
        ("priority", 10, "outside 0..9"),
        ("catch_up", "all", "not 'once' or 'skip'"),
        ("service", "tests.scheduler.sample_jobs.noop", "not a callable"),
    ],
)
def test_an_invalid_declaration_names_the_job_and_the_field(field, value, message):
    with pytest.raises(RegistryError, match=message) as error:
        _job(**{field: value})
    assert "'x-job'" in str(error.value) or "Bad_Name" in str(error.value)


def test_two_jobs_cannot_share_a_task_name(register_job):
    register_job("first-job")
    with pytest.raises(RegistryError, match="share task"):
        register(_job(name="second-job", task="tests.first_job"))


def test_an_unknown_job_lists_the_known_ones():
    with pytest.raises(RegistryError, match=r"unknown job 'nope'; known jobs: .*retention-pruning"):
        get_job("nope")


def test_retry_delay_grows_exponentially_with_capped_jitter():
    policy = RetryPolicy(backoff_base=60, backoff_cap=24 * 3600, jitter=0.2)
    assert policy.delay(0, lambda: 0.0) == 60
    assert policy.delay(3, lambda: 0.0) == 480
    assert policy.delay(3, lambda: 0.999) == pytest.approx(480 * 1.1998)
    assert policy.delay(30, lambda: 0.0) == 24 * 3600


def test_the_default_jobs_match_the_design_table():
    registered = {job.name: (job.cron, job.offset) for job in all_jobs()}
    missing = sorted(set(DEFAULT_TABLE) - set(registered))
    # Jobs land with their apps; every one that is registered must match the table.
    for name, (cron, offset) in registered.items():
        if name in DEFAULT_TABLE:
            assert (cron, offset) == DEFAULT_TABLE[name], name
    assert "retention-pruning" in registered
    assert len(missing) < len(DEFAULT_TABLE), missing


def test_registered_task_names_snapshot():
    """A renamed task strands queued messages: a change here must be deliberate."""
    from jobsite.celery import app

    jobs = {job.task for job in all_jobs()}
    assert jobs <= set(app.tasks)
    assert "scheduler.retention_prune" in jobs
    assert "scheduler.ping" in app.tasks


def test_a_job_whose_budget_is_not_below_its_soft_time_limit_is_refused() -> None:
    with pytest.raises(RegistryError, match="budget 30 s < soft_time_limit 25 s"):
        Job(
            name="too-long",
            task="tests.too_long",
            service=noop,
            cron="* * * * *",
            offset=0,
            description="budget above the soft limit",
            time_limit=55,
            budget=30,
        )


def test_every_registered_job_stops_by_itself_before_celery_interrupts_it() -> None:
    for job in all_jobs():
        assert 0 < job.budget < job.soft_time_limit < job.time_limit, job.name


def test_the_limits_table_in_docs_jobs_md_is_the_registry():
    from pathlib import Path

    from scheduler.registry import _takes_budget

    doc = (Path(__file__).parents[2] / "docs" / "jobs.md").read_text()
    rows = {
        cells[0]: cells[1:]
        for line in doc.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    for job in all_jobs():
        if job.service.__module__.startswith(("tests.", "bench.")):
            continue  # the suite's own sample jobs
        stops = "yes" if _takes_budget(job.service) else "no"
        expected = [stops, str(job.budget), str(job.soft_time_limit), str(job.time_limit)]
        assert rows.get(job.name) == expected, job.name


@pytest.mark.parametrize("app", ["games", "referrals", "scheduler"])
def test_each_app_job_names_a_service_function_of_its_own_app(app):
    """`service=prize_pool_finalise_due`, imported in the app's jobs.py: a rename fails at import,
    and a job never reaches into another app for its work."""
    jobs = [job for job in all_jobs() if job.task.startswith(f"{app}.")]
    assert jobs, app
    for job in jobs:
        assert callable(job.service), job.name
        assert job.service.__module__.startswith(f"{app}.services."), (job.name, job.service)


def test_every_registered_job_service_is_a_function_taking_now():
    import inspect

    for job in all_jobs():
        assert inspect.isfunction(job.service), job.name
        assert "now" in inspect.signature(job.service).parameters, job.name
