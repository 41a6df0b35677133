"""`manage.py runjob NAME [--sync]`: a manual run through the run path, recorded in the ledger
and in the audit trail (as `cli`, by the OS user, on behalf of `--user` if given)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from scheduler.audit import Actor
from scheduler.models import JobRun
from scheduler.registry import RegistryError, get_job
from scheduler.services.manual_runs import job_run_inline, job_run_now
from scheduler.validators import WriteRefused


class Command(BaseCommand):
    help = "Run a job now: queued for a worker, or inline with --sync. Recorded as a manual run."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="job name, e.g. leaderboard-ranking")
        parser.add_argument("--sync", action="store_true", help="run inline and wait for it")
        parser.add_argument("--user", help="username to record as the requester")
        parser.add_argument(
            "--reason", default="", help="why it runs now (recorded with who ran it)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            job = get_job(options["name"])
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"--user {options['user']!r}: no such user")
        actor = Actor.cli("manage.py runjob", user=user)
        reason = options["reason"].strip()
        try:
            if not options["sync"]:
                run = job_run_now(actor=actor, job_name=job.name, reason=reason)
                self.stdout.write(f"queued {job.name}: run {run.pk} ({run.status})")
                return
            run = job_run_inline(
                actor=actor, job_name=job.name, reason=reason, worker="runjob --sync"
            )
        except WriteRefused as exc:
            if exc.field == "reason":
                raise CommandError(f"--reason is too long: {exc.message}") from None
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"{job.name}: run {run.pk} {run.status} in {run.duration_ms} ms "
            f"{run.result or ''}{run.error}"
        )
        if run.status not in (JobRun.Status.SUCCEEDED, JobRun.Status.DUPLICATE):
            raise CommandError(f"{job.name} ended {run.status}")
