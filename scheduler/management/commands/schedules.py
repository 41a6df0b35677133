"""`manage.py schedules apply|list|remove|check`: the job schedules in the database.

`apply` and `remove` write through `scheduler.services.writes`, audited as `cli` by the OS user."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduler.audit import Actor
from scheduler.collisions import analyse
from scheduler.conf import profile
from scheduler.cron import Cron, CronError
from scheduler.models import JobRun
from scheduler.registry import RegistryError, all_jobs, get_job
from scheduler.selectors import next_starts
from scheduler.services.schedules import (
    PROFILES,
    broken_schedules,
    default_offset,
    effective_offset,
    enabled_plans,
    profile_cron,
)
from scheduler.services.writes import schedules_apply, schedules_remove


class Command(BaseCommand):
    help = "Apply, list, remove and check the job schedules stored in the database."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        apply = sub.add_parser("apply", help="create or update one periodic task per job")
        apply.add_argument(
            "--profile",
            choices=PROFILES,
            default=None,
            help="production: the jobs' own crons; test: every job every minute "
            "(default: JOBSITE_PROFILE, else production)",
        )
        apply.add_argument(
            "--reset",
            action="store_true",
            help="also overwrite cron, offset and enabled flag edited by staff",
        )
        lst = sub.add_parser(
            "list", help="every job: enabled, 6-field cron, next runs, last status"
        )
        lst.add_argument("--next", type=int, default=3, help="how many next fire times to show")
        lst.add_argument(
            "--profile",
            choices=PROFILES,
            default=None,
            help="profile whose defaults the database is compared with (default: JOBSITE_PROFILE)",
        )
        remove = sub.add_parser("remove", help="delete periodic tasks (run history stays)")
        remove.add_argument("names", nargs="*", help="job names")
        remove.add_argument("--all", action="store_true", help="every registered job")
        check = sub.add_parser("check", help="seconds where two or more jobs would start")
        check.add_argument("--days", type=int, default=7, help="window to expand (default 7)")
        check.add_argument("--suggest", action="store_true", help="suggest free offsets")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("profile", "") is None:
            options["profile"] = profile()
        getattr(self, f"_{options['action']}")(options)

    def _apply(self, options: dict[str, Any]) -> None:
        changes = schedules_apply(
            actor=Actor.cli("manage.py schedules apply"),
            profile=options["profile"],
            reset=options["reset"],
        )
        for change in changes:
            self.stdout.write(str(change))
        touched = sum(change.action != "unchanged" for change in changes)
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(changes)} jobs, profile {options['profile']}: {touched} created or updated"
            )
        )

    def _list(self, options: dict[str, Any]) -> None:
        now = timezone.now()
        tasks = {t.name: t for t in PeriodicTask.objects.select_related("crontab", "job_schedule")}
        header = (
            f"{'job':26} {'on':3} {'schedule (s m h dom mon dow)':30} {'next runs (UTC)':40} last"
        )
        self.stdout.write(header)
        for job in all_jobs():
            task = tasks.get(job.name)
            if task is None or task.crontab is None:
                self.stdout.write(f"{job.name:26} --  not applied (run `schedules apply`)")
                continue
            cron = Cron.from_model(task.crontab)
            stored = getattr(getattr(task, "job_schedule", None), "offset_seconds", 0)
            offset = effective_offset(stored)
            # As the admin, the API and the job page: a disabled schedule has no next start.
            try:
                upcoming = (
                    next_starts(cron, stored, now=now, count=options["next"])
                    if task.enabled
                    else []
                )
            except CronError as exc:
                self.stdout.write(f"{job.name:26} {'yes' if task.enabled else 'no':3} {exc}")
                continue
            last = JobRun.objects.filter(JobRun.SLOT_OWNERS, job=job.name).first()
            drift = []
            if cron != profile_cron(job, options["profile"]):
                drift.append(f"cron differs from {options['profile']} default")
            if stored != default_offset(job):
                drift.append(f"offset differs from default {default_offset(job)}")
            self.stdout.write(
                f"{job.name:26} {'yes' if task.enabled else 'no':3} {cron.six_field(offset):30} "
                f"{' '.join(t.strftime('%d %H:%M:%S') for t in upcoming) or '-':40} "
                f"{last.status if last else '-'}" + (f"  [{'; '.join(drift)}]" if drift else "")
            )

    def _remove(self, options: dict[str, Any]) -> None:
        if not options["names"] and not options["all"]:
            raise CommandError("name at least one job, or pass --all")
        for name in options["names"]:
            try:
                get_job(name)
            except RegistryError as exc:
                raise CommandError(str(exc)) from None
        removed = schedules_remove(
            actor=Actor.cli("manage.py schedules remove"),
            names=None if options["all"] else options["names"],
        )
        self.stdout.write(f"removed {len(removed)}: {', '.join(removed) or 'nothing'}")

    def _check(self, options: dict[str, Any]) -> None:
        if not 1 <= options["days"] <= 366:
            raise CommandError(f"--days {options['days']} is outside 1..366")
        report = analyse(enabled_plans(), days=options["days"], suggest=options["suggest"])
        self.stdout.write(
            f"window: {report.start} + {report.days} days; peak simultaneous "
            f"starts per second: {report.peak}"
        )
        if report.peak_at:
            self.stdout.write("peak at: " + ", ".join(f"{m:%a %H:%M:%S}" for m in report.peak_at))
        for collision in report.collisions:
            self.stdout.write(
                self.style.WARNING(
                    f"collision at offset {collision.offset:2}: {', '.join(collision.jobs)} "
                    f"({collision.seconds} seconds, first {collision.first:%a %H:%M:%S}, "
                    f"up to {collision.peak} at once)"
                )
            )
        for name, problems in broken_schedules().items():
            self.stdout.write(self.style.ERROR(f"not sendable: {name}: {'; '.join(problems)}"))
        for name, offset in sorted(report.suggestions.items()):
            self.stdout.write(f"suggest: {name} -> offset {offset}")
        if report.ok:
            self.stdout.write(self.style.SUCCESS("no collisions"))
