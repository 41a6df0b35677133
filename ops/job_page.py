"""The per-job page of the admin (as Oban Web, Sidekiq and Temporal have one): everything about one
job on one screen, and its two day-to-day buttons.

Read: its schedule in words and as a 6-field cron, enabled (and who switched it, when and why),
the next five starts (`scheduler.selectors.next_starts`), the last run from the ledger, a strip of
the last 50 outcomes, duration and lateness trends (inline SVG, `ops.charts`), open incidents.
Write: **Run now** (`scheduler.services.manual_runs.job_run_now`) and **Disable / Enable with a
note** (`scheduler.services.writes.schedules_set_enabled`, which writes the note into the audit
row). The views only translate the request and call those services; they never write a row.

Cost: it reads one job, so it stays fast at 10,000 schedules and a million ledger rows — one
schedule by its unique name, the newest 50 runs through the (job, -slot) index, the newest
enable/disable audit row through its (object_type, object_repr, -created_at) index, and the
job's open incidents.

URLs (registered by the schedules' admin, `ops.admin.OpsPeriodicTaskAdmin.get_urls`):
`admin:ops_job`, `admin:ops_job_run_now` and `admin:ops_job_set_enabled`, each by job name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cron_descriptor import get_description
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django_celery_beat.models import PeriodicTask

from core.permissions import CHANGE_SCHEDULE, DASHBOARD, RUN_JOB, VIEW_INCIDENT
from monitoring.alerts import open_incidents
from monitoring.models import Incident
from ops import charts
from ops.actors import actor_from_request
from ops.timefmt import at_second
from scheduler.cron import Cron, CronError
from scheduler.models import AuditEvent, JobRun
from scheduler.registry import Job, find_job
from scheduler.selectors import next_starts
from scheduler.services.manual_runs import job_run_now
from scheduler.services.schedules import effective_offset
from scheduler.services.writes import schedules_set_enabled
from scheduler.validators import WriteRefused

STRIP_LENGTH = 50
NOTE_MAX = 255  # AuditEvent.reason

# Colours of the outcome strip; the same meaning as the ledger's status badges.
STRIP_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "lost": "#c62828",
    "missed": "#c62828",
    "expired": "#ef6c00",
    "skipped_lock": "#ef6c00",
    "retrying": "#ef6c00",
    "running": "#1565c0",
    "queued": "#90caf9",
}


def job_page_url(name: str) -> str:
    return reverse("admin:ops_job", args=[name])


def job_page_link(name: str) -> SafeString | str:
    """The job's name linking to its page; a name no longer registered stays plain text."""
    if find_job(name) is None:
        return name
    return format_html('<a class="ops-job-link" href="{}">{}</a>', job_page_url(name), name)


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------

_DAYS = {
    "0": "Sundays",
    "1": "Mondays",
    "2": "Tuesdays",
    "3": "Wednesdays",
    "4": "Thursdays",
    "5": "Fridays",
    "6": "Saturdays",
    "7": "Sundays",
}


def cron_in_words(cron: Cron, offset: int) -> str:
    """ "every 5 minutes at second 25", "hourly at :00:20", "daily at 03:00:35 UTC".

    The common shapes are said plainly; anything else is cron_descriptor's sentence (the one
    django-celery-beat shows) with the second added.
    """
    second = effective_offset(offset)
    minute, hour, dom, month, dow = (
        cron.minute,
        cron.hour,
        cron.day_of_month,
        cron.month_of_year,
        cron.day_of_week,
    )
    every_day = dom == "*" and month == "*"
    if every_day and dow == "*" and hour == "*":
        if minute == "*":
            return f"every minute at second {second}"
        if minute.startswith("*/") and minute[2:].isdigit():
            return f"every {int(minute[2:])} minutes at second {second}"
        if minute.isdigit():
            return f"hourly at :{int(minute):02d}:{second:02d}"
    if every_day and minute.isdigit() and hour.isdigit():
        at = f"{int(hour):02d}:{int(minute):02d}:{second:02d} UTC"
        if dow == "*":
            return f"daily at {at}"
        if dow in _DAYS:
            return f"on {_DAYS[dow]} at {at}"
    try:
        sentence = get_description(str(cron))
    except Exception:
        return f"cron {cron} (UTC) at second {second}"
    return f"{sentence} (UTC), at second {second}"


@dataclass
class StripCell:
    run: JobRun
    colour: str
    title: str


@dataclass
class JobPage:
    job: Job
    task: PeriodicTask | None
    now: datetime
    cron: Cron | None = None
    cron_problem: str = ""
    offset: int = 0
    words: str = ""
    six_field: str = ""
    next_runs: list[datetime] = field(default_factory=list)
    last: JobRun | None = None  # newest run whose slot has come
    queued: list[JobRun] = field(default_factory=list)  # runs waiting for a slot still ahead
    strip: list[StripCell] = field(default_factory=list)  # oldest first
    switched: AuditEvent | None = None  # the newest enable/disable, with its note
    incidents: list[Incident] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.task and self.task.enabled)


def job_page_read(*, job: Job, now: datetime, with_incidents: bool) -> JobPage:
    """Everything the page shows of one job; a handful of indexed queries, each with a LIMIT."""
    task = (
        PeriodicTask.objects.select_related("crontab", "job_schedule").filter(name=job.name).first()
    )
    page = JobPage(job=job, task=task, now=now)
    if task is not None and task.crontab_id:
        page.offset = getattr(getattr(task, "job_schedule", None), "offset_seconds", 0)
        try:
            page.cron = Cron.from_model(task.crontab)
            page.cron.validate()
        except CronError as exc:
            page.cron, page.cron_problem = None, str(exc)
        else:
            page.words = cron_in_words(page.cron, page.offset)
            page.six_field = page.cron.six_field(effective_offset(page.offset))
            if task.enabled:
                page.next_runs = next_starts(page.cron, page.offset, now=now, count=5)
    runs = list(
        JobRun.objects.filter(job=job.name, duplicate_of__isnull=True).order_by(
            "-slot", "-attempt"
        )[:STRIP_LENGTH]
    )
    page.queued = [run for run in runs if run.slot > now and run.status == JobRun.Status.QUEUED]
    # A refused message (forged or overtaken) claims no slot: it is in the strip, not the last run.
    page.last = next(
        (run for run in runs if run.slot <= now and run.status != JobRun.Status.REFUSED), None
    )
    page.strip = [_cell(run) for run in reversed(runs)]
    if task is not None:
        page.switched = (
            AuditEvent.objects.filter(
                object_type="schedule",
                object_repr=task.name,
                action__in=[AuditEvent.Action.SCHEDULE_ENABLE, AuditEvent.Action.SCHEDULE_DISABLE],
            )
            .order_by("-created_at", "-id")
            .first()
        )
    page.incidents = open_incidents(jobs=[job.name]) if with_incidents else None
    return page


def _cell(run: JobRun) -> StripCell:
    parts = [f"{at_second(run.slot)}", run.status]
    if run.attempt > 1:
        parts.append(f"attempt {run.attempt}")
    if run.duration_ms is not None:
        parts.append(f"{run.duration_ms} ms")
    if run.lateness_ms is not None:
        parts.append(f"{run.lateness_ms} ms late")
    if run.trigger != JobRun.Trigger.BEAT:
        parts.append(f"trigger {run.trigger}")
    return StripCell(
        run=run, colour=STRIP_COLOURS.get(run.status, "#757575"), title=" · ".join(parts)
    )


def _trend(page: JobPage, attribute: str, *, name: str, title: str) -> SafeString:
    runs = [cell.run for cell in page.strip if getattr(cell.run, attribute) is not None]
    return charts.bar_chart(
        [max(0, getattr(run, attribute)) for run in runs],
        [f"{run.slot:%H:%M:%S}" for run in runs],
        name=name,
        title=title,
        height=160,
        tick_every=10,
    )


# ---------------------------------------------------------------------------------------------
# Views (mounted through admin_view: staff only, CSRF on POST)
# ---------------------------------------------------------------------------------------------


def _job_or_404(name: str) -> Job:
    job = find_job(name)
    if job is None:
        raise Http404(f"no registered job {name!r}")
    return job


def job_page_view(request: HttpRequest, name: str) -> TemplateResponse:
    """Needs view permission on runs and schedules (as the dashboard); else 403."""
    if not request.user.has_perms(DASHBOARD):
        raise PermissionDenied
    job = _job_or_404(name)
    now = timezone.now()
    page = job_page_read(job=job, now=now, with_incidents=request.user.has_perm(VIEW_INCIDENT))
    context = {
        **admin.site.each_context(request),
        "title": f"Job {job.name}",
        "page": page,
        "now": now,
        "open_incidents": page.incidents,
        "incidents_scope": job.name,
        "duration_chart": _trend(
            page, "duration_ms", name="job-duration", title="Duration (ms), last runs"
        ),
        "lateness_chart": _trend(
            page, "lateness_ms", name="job-lateness", title="Lateness (ms), last runs"
        ),
        "can_run_now": request.user.has_perm(RUN_JOB),
        "can_switch": request.user.has_perm(CHANGE_SCHEDULE) and page.task is not None,
        "note_max": NOTE_MAX,
    }
    return TemplateResponse(request, "admin/ops/job_page.html", context)


def job_run_now_view(request: HttpRequest, name: str) -> HttpResponse:
    """POST: run the job now through the run path; the message links to the queued run."""
    if not request.user.has_perm(RUN_JOB):
        raise PermissionDenied
    job = _job_or_404(name)
    reason = request.POST.get("reason", "").strip()[:NOTE_MAX]
    try:
        run = job_run_now(
            actor=actor_from_request(request, via="admin"), job_name=job.name, reason=reason
        )
    except WriteRefused as exc:
        messages.error(request, exc.message)
    else:
        url = reverse("admin:scheduler_jobrun_change", args=[run.pk])
        messages.success(
            request,
            format_html(
                '{}: run <a id="ops-queued-run" href="{}">#{}</a> {} (slot {}).',
                job.name,
                url,
                run.pk,
                run.status,
                at_second(run.slot),
            ),
        )
    return HttpResponseRedirect(job_page_url(job.name))


def job_set_enabled_view(request: HttpRequest, name: str) -> HttpResponse:
    """POST `enabled=0|1` and `note`: disable (a note is required: who is recorded, the note says
    why) or enable the job's schedule. The service writes the audit row with the note."""
    if not request.user.has_perm(CHANGE_SCHEDULE):
        raise PermissionDenied
    job = _job_or_404(name)
    enabled = request.POST.get("enabled") == "1"
    note = " ".join(request.POST.get("note", "").split())
    if not enabled and not note:
        messages.error(request, "Say why in the note: it is shown on this page and in the audit.")
        return HttpResponseRedirect(job_page_url(job.name))
    if len(note) > NOTE_MAX:
        messages.error(request, f"The note is {len(note)} characters; at most {NOTE_MAX}.")
        return HttpResponseRedirect(job_page_url(job.name))
    tasks = PeriodicTask.objects.filter(name=job.name)
    if not tasks.exists():
        raise Http404(f"{job.name} has no schedule")
    count = schedules_set_enabled(
        actor=actor_from_request(request, via="admin"), tasks=tasks, enabled=enabled, reason=note
    )
    state = "enabled" if enabled else "disabled"
    if count:
        messages.success(request, f"{job.name} {state}.")
    else:
        messages.info(request, f"{job.name} was already {state}; nothing changed.")
    return HttpResponseRedirect(job_page_url(job.name))
