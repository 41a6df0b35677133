"""`manage.py runjob NAME [--sync]`: a manual run through the run path, recorded in the ledger."""

from __future__ import annotations

import getpass
from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scheduler.models import JobRun
from scheduler.registry import RegistryError, get_job
from scheduler.services.dispatch import job_trigger
from scheduler.services.runs import Delivery, job_execute, new_task_id, slot_of


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
        user_id = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"--user {options['user']!r}: no such user")
            user_id = user.pk
        reason = f"manage.py runjob by {getpass.getuser()}"
        if options["reason"].strip():
            reason = f"{reason}: {options['reason'].strip()}"
        limit = JobRun._meta.get_field("reason").max_length or 255
        if len(reason) > limit:
            raise CommandError(
                f"--reason is too long: {len(reason)} characters with who ran it, at most {limit}"
            )
        if not options["sync"]:
            run = job_trigger(
                job=job, trigger=JobRun.Trigger.MANUAL, user_id=user_id, reason=reason
            )
            self.stdout.write(f"queued {job.name}: run {run.pk} ({run.status})")
            return
        delivery = Delivery(
            job=job,
            slot=slot_of(timezone.now()),
            trigger=JobRun.Trigger.MANUAL,
            task_id=f"sync-{new_task_id()}",
            worker="runjob --sync",
            user_id=user_id,
            reason=reason,
        )
        run = job_execute(delivery).run
        self.stdout.write(
            f"{job.name}: run {run.pk} {run.status} in {run.duration_ms} ms "
            f"{run.result or ''}{run.error}"
        )
        if run.status not in (JobRun.Status.SUCCEEDED, JobRun.Status.DUPLICATE):
            raise CommandError(f"{job.name} ended {run.status}")
