from django.db import OperationalError

from referrals.services.rewards import referral_tier2_create, referral_tier3_create
from referrals.services.settlement import settlement_run
from scheduler.registry import discover, get_job


def test_the_referral_jobs_are_declared_as_the_design_says():
    # a rename or a schedule change shows up here in review
    discover()
    jobs = {name: get_job(name) for name in ("referral-tier2", "referral-tier3", "settlement")}
    assert {n: (j.task, j.cron, j.offset, j.queue) for n, j in jobs.items()} == {
        "referral-tier2": ("referrals.tier2_create", "* * * * *", 0, "default"),
        "referral-tier3": ("referrals.tier3_create", "* * * * *", 15, "default"),
        "settlement": ("referrals.settlement_run", "*/10 * * * *", 40, "long"),
    }
    assert {j.service for j in jobs.values()} == {
        referral_tier2_create,
        referral_tier3_create,
        settlement_run,
    }
    assert all(j.retry.retry_on == (OperationalError,) for j in jobs.values())


def test_the_job_services_resolve_and_take_now():
    import inspect

    discover()
    for name in ("referral-tier2", "referral-tier3", "settlement"):
        service = get_job(name).service
        assert "now" in inspect.signature(service).parameters


def test_each_referral_run_ends_before_its_next_slot_and_gets_a_budget():
    import inspect

    discover()
    # every-minute jobs are killed within the minute, settlement within its 10 minutes
    cadence = {"referral-tier2": 60, "referral-tier3": 60, "settlement": 600}
    for name, seconds in cadence.items():
        job = get_job(name)
        assert job.budget < job.soft_time_limit < job.time_limit <= seconds, name
        # the run path hands a budget only to services that declare one
        assert "budget" in inspect.signature(job.service).parameters, name
