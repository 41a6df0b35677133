"""Admin for the scheduler: schedules (django-celery-beat's admin, extended), the run ledger, the
audit trail, job leases and alert incidents (open ones are shown above a job's runs).

The admin is an interface: every write — a schedule's form, its delete, the enable/disable/toggle
actions, a crontab row's form, run now and retry — is one call of a scheduler service
(`scheduler.services.writes`, `scheduler.services.manual_runs`), which validates, audits and
tells beat. django-celery-beat's own "Run selected tasks" action is replaced: it calls
`apply_async` directly, bypassing offsets, the slot claim, the lease and the ledger.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import DateFieldListFilter
from django.db.models import OuterRef, QuerySet, Subquery
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from django_celery_beat.admin import CrontabScheduleAdmin, PeriodicTaskAdmin, PeriodicTaskForm
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from core.admin import ReadOnlyAdmin
from core.permissions import (
    ADD_SCHEDULE,
    CHANGE_SCHEDULE,
    CLOSE_INCIDENT,
    DASHBOARD,
    RETRY_RUN,
    RUN_JOB,
    VIEW_INCIDENT,
    VIEW_SCHEDULE,
)
from monitoring.alerts import incidents_close, open_incidents
from monitoring.models import AlertDelivery, Incident
from ops.actors import actor_from_request
from ops.job_page import (
    cron_in_words,
    job_page_link,
    job_page_url,
    job_page_view,
    job_run_now_view,
    job_set_enabled_view,
)
from ops.timefmt import ago, at_second
from scheduler.audit import Actor
from scheduler.cron import Cron, CronError
from scheduler.ledger import RETRYABLE
from scheduler.models import OFFSET_HELP, AuditEvent, JobLease, JobRun, JobSchedule
from scheduler.preview import schedule_preview
from scheduler.registry import all_jobs, find_job, job_for_task
from scheduler.selectors import next_starts
from scheduler.services.manual_runs import job_run_now_for_task, runs_retry
from scheduler.services.schedules import (
    broken_schedules,
    crontab_unsaved,
    effective_offset,
    schedule_problems,
)
from scheduler.services.writes import (
    crontab_delete,
    crontab_save,
    schedule_delete,
    schedule_save,
    schedules_set_enabled,
    schedules_toggle,
)
from scheduler.validators import OFFSET_ERROR, WriteRefused, validate_offset

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "lost": "#c62828",
    "missed": "#c62828",
    "expired": "#ef6c00",
    "skipped_lock": "#ef6c00",
    "duplicate": "#757575",
    "refused": "#c62828",  # a message nobody should have sent: look at it
    "skipped_disabled": "#757575",  # staff disabled the schedule while the message waited
    "superseded": "#757575",  # staff changed the cron or offset while the message waited
    "retrying": "#ef6c00",
    "running": "#1565c0",
    "queued": "#1565c0",
}


def status_badge(status: str | None) -> str:
    if not status:
        return "-"
    return format_html(
        '<span class="ops-status" data-status="{}" style="color:{};font-weight:bold">{}</span>',
        status,
        STATUS_COLOURS.get(status, "inherit"),
        status,
    )


admin.site.site_header = "jobsite operations"
admin.site.site_title = "jobsite"


def moment_column(field: str, description: str) -> Any:
    """A list column or read-only field showing a moment to the second (ops.timefmt): Django's
    locale format would write "6:21 a.m.", hiding the offset."""

    @admin.display(description=description, ordering=field)
    def column(self: Any, obj: Any) -> str:
        return at_second(getattr(obj, field))

    column.__name__ = f"{field}_at_second"
    return column


# The schedule list and the ledger are wide tables: without the app list beside them (the header
# links to the dashboard, schedules and runs) they fit a 1280 px window with their filters.
WIDE_LIST = {"is_nav_sidebar_enabled": False}


def _actor(request: HttpRequest) -> Actor:
    return actor_from_request(request, via="admin")


def _open_incidents(request: HttpRequest, jobs: list[str] | None) -> list[Any] | None:
    """Open incidents for the box above runs and schedules; None (no box) without view_incident."""
    return open_incidents(jobs=jobs) if request.user.has_perm(VIEW_INCIDENT) else None


# ---------------------------------------------------------------------------------------------
# Schedules: django-celery-beat's PeriodicTask admin with the offset inline
# ---------------------------------------------------------------------------------------------


class JobScheduleForm(forms.ModelForm):
    # The model's validators would say "Ensure this value is less than or equal to 59"; operators
    # get one message that says what an offset is, for 60, -1 and "abc" alike.
    offset_seconds = forms.IntegerField(
        label="Offset (seconds)",
        help_text=OFFSET_HELP,
        error_messages={"invalid": OFFSET_ERROR, "required": OFFSET_ERROR},
        validators=[validate_offset],
    )

    class Meta:
        model = JobSchedule
        fields = ("offset_seconds",)


class JobScheduleFormSet(BaseInlineFormSet):
    """Refuses a change that would make this job start in the same second as another, unless
    the operator ticks "save despite a collision": the warning is shown before anything saves."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        task: PeriodicTask = self.instance
        if not task.enabled or task.crontab is None or not task.name:
            return
        offset = next(
            (f.cleaned_data["offset_seconds"] for f in self.forms if f.cleaned_data), None
        )
        if offset is None:
            stored = JobSchedule.objects.filter(periodic_task_id=task.pk).first()
            offset = stored.offset_seconds if stored else 0
        try:
            cron = Cron.from_model(task.crontab)
            cron.validate()
        except CronError:
            return  # the crontab row itself is reported by the checks and by beat
        preview = schedule_preview(name=task.name, cron=cron, offset=offset, enabled=True)
        if preview.new_partners and not self.data.get("accept_collision"):
            raise forms.ValidationError(
                f"Collision: {preview.warning()}. Tick “save despite a collision” to save anyway."
            )


class JobScheduleInline(admin.StackedInline):
    model = JobSchedule
    form = JobScheduleForm
    formset = JobScheduleFormSet
    fields = ("offset_seconds", "tracked_since", "reconciled_until")
    readonly_fields = ("tracked_since", "reconciled_until")
    can_delete = False
    min_num = 1
    max_num = 1
    extra = 0
    verbose_name = "job offset"
    verbose_name_plural = "job offset"

    # The offset is part of the schedule: the schedule's permissions govern it, not JobSchedule's
    # own (one permission model for schedules, as in the API).
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_SCHEDULE) or self.has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(CHANGE_SCHEDULE if obj is not None else ADD_SCHEDULE)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Ours, in place of django-celery-beat's ("Short Description For This Task", ...): what each field
# means for jobsite. Fields not listed keep Django's default (none).
SCHEDULE_HELP = {
    "name": "The job's name for registered jobs (the ledger, alerts and the API use it); any "
    "unique name for other tasks.",
    "regtask": "The Celery task to send. A registered job's task runs through the job wrapper "
    "(slot claim, lock, ledger).",
    "task": "Only for a task not in the list above (its dotted Celery name).",
    "enabled": "Off: beat sends nothing for this schedule (the per-job page records who and why).",
    "description": "What the schedule is for, shown in the admin only.",
    "crontab": "The crontab row (UTC) this schedule fires on; easier: type a cron above.",
    "interval": "Only for tasks that are not jobs: fire every N seconds/minutes/...",
    "solar": "Only for tasks that are not jobs: fire at a solar event (needs the ephem package).",
    "clocked": "Only for tasks that are not jobs: fire once at a given moment (set one-off too).",
    "start_time": "Nothing is sent before this moment (UTC). Empty: from now.",
    "one_off": "Disable the schedule after its first send.",
    "args": "JSON list of positional arguments. Jobs take none.",
    "kwargs": "JSON object of keyword arguments. Jobs take none (beat adds the slot).",
    "expires": "The message is dropped (recorded expired) if not started by this moment.",
    "expire_seconds": "The message is dropped (recorded expired) if not started within this many "
    "seconds after it is sent. Only one of the two expiry fields.",
    "queue": "Celery queue the message goes to; registered jobs have their own (default, long).",
    "exchange": "Leave empty: jobsite routes by queue.",
    "routing_key": "Leave empty: jobsite routes by queue.",
    "priority": "0 (highest) to 9. Empty: the queue's default.",
    "headers": "JSON object of extra message headers. Usually empty.",
}
SOLAR_REFUSED = (
    "Solar schedules need the ephem package, which jobsite does not install; use a crontab (or "
    "an interval) instead."
)
# The schedule fields jobs never use; hidden from a job's change form.
NON_JOB_SCHEDULES = ("interval", "solar", "clocked")


class OpsPeriodicTaskForm(PeriodicTaskForm):
    cron_expression = forms.CharField(
        label="Cron (UTC)",
        required=False,
        help_text="Five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, "
        "@weekly, @monthly, @yearly. When changed it replaces the crontab chosen above.",
    )
    accept_collision = forms.BooleanField(
        label="Save despite a collision",
        required=False,
        help_text="Only when the warning below the offset says this change makes two jobs start "
        "in the same second and that is what you want.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.crontab_id:
            self.fields["cron_expression"].initial = str(Cron.from_model(self.instance.crontab))
        for name, text in SCHEDULE_HELP.items():
            if name in self.fields:
                self.fields[name].help_text = text

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        job = job_for_task(data.get("task") or "")
        if job is not None:
            # A job's slots are cron boundaries plus its offset: the ledger, the reconciler and
            # the collision check know no other kind of schedule.
            for other in ("interval", "solar", "clocked"):
                if data.get(other):
                    self.add_error(
                        other,
                        f"{data['task']} is the job {job.name}: jobs run on a crontab (with their "
                        "offset); give a cron instead.",
                    )
        if data.get("solar") and importlib.util.find_spec("ephem") is None:
            self.add_error("solar", SOLAR_REFUSED)
        if "cron_expression" in self.changed_data and data.get("cron_expression"):
            try:
                cron = Cron.parse(data["cron_expression"])
            except CronError as exc:
                self.add_error("cron_expression", str(exc))
            else:
                # Unsaved: validation writes nothing; `schedule_save` stores the row (reusing an
                # equal one), so a form refused later leaves no stray crontab behind.
                data["crontab"] = crontab_unsaved(cron)
        return data

    def _post_clean(self) -> None:
        super()._post_clean()
        # What the model's pre_save would refuse (arguments that are not a JSON list/object, an
        # unknown task) is said on the form, next to its field, instead of failing the save.
        from celery import current_app as app

        for problem in schedule_problems(self.instance, set(app.tasks), check_crontab=False):
            field = problem.split(" ", 1)[0]
            self.add_error(field if field in self.fields else None, problem)


class CronValidatingForm(forms.ModelForm):
    """django-celery-beat's crontab form, refusing a cron that never fires (`0 0 31 2 *`)."""

    def _post_clean(self) -> None:
        super()._post_clean()
        if not self.errors:
            try:
                Cron.from_model(self.instance).validate()
            except CronError as exc:
                self.add_error(None, str(exc))


admin.site.unregister(CrontabSchedule)


@admin.register(CrontabSchedule)
class OpsCrontabScheduleAdmin(CrontabScheduleAdmin):
    """A crontab row may be shared by several schedules: its saves and deletes go through the
    scheduler's services, which restart slot tracking of (or delete, audited) every schedule on
    it."""

    form = CronValidatingForm

    def save_model(self, request: HttpRequest, obj: CrontabSchedule, form: Any, change: bool):
        crontab_save(actor=_actor(request), crontab=obj)

    def delete_model(self, request: HttpRequest, obj: CrontabSchedule) -> None:
        crontab_delete(actor=_actor(request), crontab=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CrontabSchedule]) -> None:
        for crontab in queryset:
            crontab_delete(actor=_actor(request), crontab=crontab)


@admin.display(description="schedule (s m h dom mon dow)")
def _six_field(obj: PeriodicTask) -> str:
    if not obj.crontab_id:
        return str(obj.interval or obj.clocked or obj.solar or "-")
    offset = getattr(getattr(obj, "job_schedule", None), "offset_seconds", 0)
    return format_html(
        "<code>{}</code>", Cron.from_model(obj.crontab).six_field(effective_offset(offset))
    )


admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class OpsPeriodicTaskAdmin(PeriodicTaskAdmin):
    form = OpsPeriodicTaskForm
    inlines = [JobScheduleInline]
    change_form_template = "admin/ops/periodictask/change_form.html"
    change_list_template = "admin/ops/periodictask/change_list.html"
    date_hierarchy = None
    list_display = (
        "name",
        "enabled",
        _six_field,
        "next_starts",
        "last_status",
        "queue",
        "job_page",
    )
    list_filter = ["enabled", "queue", "task"]
    actions = ("enable_tasks", "disable_tasks", "toggle_tasks", "run_now")
    # The offset inline is drawn right after "Schedule", next to the cron (change_form.html).
    fieldsets = (
        (None, {"fields": ("name", "regtask", "task", "enabled", "description")}),
        ("Schedule", {"fields": ("cron_expression", "crontab", "schedule_words")}),
        ("Next starts and collisions", {"fields": ("schedule_preview", "accept_collision")}),
        (
            "Other schedule types (tasks that are not jobs)",
            {"fields": ("interval", "solar", "clocked")},
        ),
        ("Timing", {"fields": ("last_run_ledger", "start_time", "one_off", "last_run_at")}),
        ("Arguments", {"fields": ("args", "kwargs"), "classes": ("collapse",)}),
        (
            "Execution options",
            {
                "fields": (
                    "expires",
                    "expire_seconds",
                    "queue",
                    "exchange",
                    "routing_key",
                    "priority",
                    "headers",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    readonly_fields = ("last_run_ledger", "last_run_at", "schedule_words", "schedule_preview")

    @admin.display(description="last run (ledger)")
    def last_run_ledger(self, obj: PeriodicTask) -> str:
        # From the ledger, not beat's last_run_at (which lags by up to beat's sync interval).
        run = (
            JobRun.objects.filter(JobRun.SLOT_OWNERS, job=obj.name, slot__lte=timezone.now())
            .order_by("-slot", "-attempt")
            .first()
            if obj and obj.pk
            else None
        )
        if run is None:
            return "-"
        url = reverse("admin:scheduler_jobrun_change", args=[run.pk])
        return format_html(
            '<a href="{}">{}</a>, slot {} ({})',
            url,
            status_badge(run.status),
            at_second(run.slot),
            ago(run.slot, now=timezone.now()),
        )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """A job's form offers only the crontab: interval, solar and clocked are for other tasks
        (shown anyway while a job's row still carries one, so it can be cleared)."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or job_for_task(obj.task) is None:
            return fieldsets
        if any(getattr(obj, f"{name}_id") for name in NON_JOB_SCHEDULES):
            return fieldsets
        return [(name, opts) for name, opts in fieldsets if "interval" not in opts["fields"]]

    @admin.display(description="in words")
    def schedule_words(self, obj: PeriodicTask) -> str:
        if not obj or not obj.pk or not obj.crontab_id:
            return "-"
        offset = getattr(getattr(obj, "job_schedule", None), "offset_seconds", 0)
        try:
            return cron_in_words(Cron.from_model(obj.crontab), offset)
        except CronError as exc:
            return str(exc)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PeriodicTask]:
        newest = JobRun.objects.filter(JobRun.SLOT_OWNERS, job=OuterRef("name")).order_by(
            "-slot", "-attempt"
        )
        return (
            super()
            .get_queryset(request)
            .select_related("job_schedule")
            .annotate(
                last_status=Subquery(newest.values("status")[:1]),
                last_lateness_ms=Subquery(newest.values("lateness_ms")[:1]),
            )
        )

    # -- columns ------------------------------------------------------------------------------

    @admin.display(description="next five starts (UTC)")
    def next_starts(self, obj: PeriodicTask) -> str:
        if not obj.enabled or not obj.crontab_id:
            return "-"
        offset = getattr(getattr(obj, "job_schedule", None), "offset_seconds", 0)
        try:
            slots = next_starts(Cron.from_model(obj.crontab), offset, now=timezone.now())
        except CronError as exc:
            return format_html('<span style="color:#c62828">{}</span>', exc)
        now = timezone.now()
        return format_html_join(
            ", ", '<span class="ops-start">{}</span>', ((at_second(s, now=now),) for s in slots)
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # What beat leaves out (the rows check W003 reports), where staff edit schedules: a row
        # written around the admin's validation is otherwise only in beat's log.
        if request.method == "GET":
            for name, problems in broken_schedules().items():
                messages.warning(request, f"Beat does not send {name}: {'; '.join(problems)}")
        return super().changelist_view(request, {**(extra_context or {}), **WIDE_LIST})

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)
        # The per-job page needs the dashboard's permissions: no link a user cannot follow.
        return shown if request.user.has_perms(DASHBOARD) else [c for c in shown if c != "job_page"]

    @admin.display(description="job page")
    def job_page(self, obj: PeriodicTask) -> str:
        job = job_for_task(obj.task)
        return job_page_link(job.name) if job is not None else "-"

    @admin.display(description="last status", ordering="last_status")
    def last_status(self, obj: PeriodicTask) -> str:
        # Status and lateness in one cell: a column less keeps the list inside 1280 px.
        badge = status_badge(getattr(obj, "last_status", None))
        late = getattr(obj, "last_lateness_ms", None)
        return (
            badge if late is None else format_html("{}<br><small>{} ms late</small>", badge, late)
        )

    @admin.display(description="last lateness", ordering="last_lateness_ms")
    def last_lateness(self, obj: PeriodicTask) -> str:
        value = getattr(obj, "last_lateness_ms", None)
        return "-" if value is None else f"{value} ms"

    @admin.display(description="next starts and collisions")
    def schedule_preview(self, obj: PeriodicTask) -> str:
        if not obj or not obj.pk or not obj.crontab_id:
            return "-"
        offset = getattr(getattr(obj, "job_schedule", None), "offset_seconds", 0)
        try:
            preview = schedule_preview(
                name=obj.name, cron=Cron.from_model(obj.crontab), offset=offset, enabled=True
            )
        except CronError as exc:
            return str(exc)
        times = format_html_join(
            "", "<li>{}</li>", ((f"{s:%a %Y-%m-%d %H:%M:%S} UTC",) for s in preview.next_runs)
        )
        clash = format_html_join(
            "",
            '<li style="color:#c62828">starts with {} at offset {} ({} seconds a week, first {})'
            "</li>",
            (
                (
                    ", ".join(j for j in c.jobs if j != obj.name),
                    c.offset,
                    c.seconds,
                    f"{c.first:%a %H:%M:%S}",
                )
                for c in preview.collisions
            ),
        )
        return format_html(
            "<code>{}</code><ul>{}</ul>{}",
            preview.six_field,
            times,
            format_html('<ul class="ops-collisions">{}</ul>', clash) if clash else "no collision",
        )

    # -- writes: each one call of a scheduler service, which audits it -------------------------

    def save_model(self, request: HttpRequest, obj: PeriodicTask, form: Any, change: bool) -> None:
        """Nothing yet: the schedule and its offset are one write (`schedule_save`, called from
        `save_related`, which Django calls next in the same transaction)."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        offset = None
        others = []
        for formset in formsets:
            if formset.model is JobSchedule:
                formset.save(commit=False)  # writes nothing; Django's change message reads it
                offset = next(
                    (f.cleaned_data["offset_seconds"] for f in formset.forms if f.cleaned_data),
                    None,
                )
            else:
                others.append(formset)
        schedule_save(actor=_actor(request), task=form.instance, offset=offset)
        form.save_m2m()
        for formset in others:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: PeriodicTask) -> None:
        schedule_delete(actor=_actor(request), task=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        for task in queryset:
            schedule_delete(actor=_actor(request), task=task)

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules_set_enabled(actor=_actor(request), tasks=queryset, enabled=True)
        self.message_user(request, f"{count} schedule(s) enabled.")

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules_set_enabled(actor=_actor(request), tasks=queryset, enabled=False)
        self.message_user(request, f"{count} schedule(s) disabled.")

    @admin.action(description="Toggle enabled of selected schedules", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules_toggle(actor=_actor(request), tasks=queryset)
        self.message_user(request, f"{count} schedule(s) toggled.")

    @admin.action(
        description="Run now (through the run path: offsets aside, lock and ledger)",
        permissions=["run_job"],
    )
    def run_now(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        for task in queryset:
            self._run_one(request, task)

    def has_run_job_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(RUN_JOB)

    def _run_one(self, request: HttpRequest, task: PeriodicTask) -> None:
        try:
            run = job_run_now_for_task(actor=_actor(request), task=task)
        except WriteRefused as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return
        url = reverse("admin:scheduler_jobrun_change", args=[run.pk])
        self.message_user(
            request,
            format_html('{}: run <a href="{}">#{}</a> {}.', task.name, url, run.pk, run.status),
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        task = PeriodicTask.objects.filter(pk=object_id).only("name", "task").first()
        extra_context = {
            **(extra_context or {}),
            "can_run_now": self.has_run_job_permission(request),
        }
        if task is not None:
            job = find_job(task.name)
            if job is not None and request.user.has_perms(DASHBOARD):
                extra_context["job_page_url"] = job_page_url(job.name)
            extra_context["open_incidents"] = _open_incidents(request, [task.name])
            extra_context["incidents_scope"] = task.name
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            # The per-job page (ops.job_page), by job name; before the catch-all object URLs.
            path("job/<str:name>/", view(job_page_view), name="ops_job"),
            path(
                "job/<str:name>/run-now/",
                view(require_POST(job_run_now_view)),
                name="ops_job_run_now",
            ),
            path(
                "job/<str:name>/enabled/",
                view(require_POST(job_set_enabled_view)),
                name="ops_job_set_enabled",
            ),
            path(
                "<int:object_id>/run-now/",
                self.admin_site.admin_view(require_POST(self.run_now_view)),
                name="django_celery_beat_periodictask_run_now",
            ),
            *super().get_urls(),
        ]

    def run_now_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_run_job_permission(request):
            return HttpResponse(status=403)
        task = get_object_or_404(PeriodicTask, pk=object_id)
        self._run_one(request, task)
        return HttpResponseRedirect(
            reverse("admin:scheduler_jobrun_changelist") + f"?job={task.name}"
        )


# ---------------------------------------------------------------------------------------------
# The run ledger
# ---------------------------------------------------------------------------------------------


class JobNameFilter(admin.SimpleListFilter):
    title = "job"
    parameter_name = "job"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(job.name, job.name) for job in sorted(all_jobs(), key=lambda j: j.name)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> QuerySet[JobRun]:
        return queryset.filter(job=self.value()) if self.value() else queryset


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    change_form_template = "admin/ops/jobrun/change_form.html"
    change_list_template = "admin/ops/jobrun/change_list.html"
    list_display = (
        "id",
        "job_link",
        "slot_at_second",
        "attempt",
        "status_badge",
        "trigger",
        "duration_ms",
        "lateness_ms",
        "worker",
        "user",
    )
    list_display_links = ("id",)
    list_filter = (JobNameFilter, "status", "trigger", ("slot", DateFieldListFilter))
    search_fields = ("job", "task_id", "worker", "reason", "error")
    list_select_related = ("user",)
    date_hierarchy = "slot"
    actions = ("retry_runs",)
    fields = (
        "job_link",
        "slot_at_second",
        "attempt",
        "status",
        "trigger",
        "user",
        "reason",
        "duplicate_of",
        "task_id",
        "celery_result",
        "worker",
        "fence",
        "created_at_at_second",
        "started_at_at_second",
        "heartbeat_at_at_second",
        "finished_at_at_second",
        "duration_ms",
        "lateness_ms",
        "result",
        "error",
        "traceback_text",
    )
    readonly_fields = (
        "job_link",
        "slot_at_second",
        "created_at_at_second",
        "started_at_at_second",
        "heartbeat_at_at_second",
        "finished_at_at_second",
        "celery_result",
        "traceback_text",
    )
    slot_at_second = moment_column("slot", "slot (UTC)")
    created_at_at_second = moment_column("created_at", "created at")
    started_at_at_second = moment_column("started_at", "started at")
    heartbeat_at_at_second = moment_column("heartbeat_at", "heartbeat at")
    finished_at_at_second = moment_column("finished_at", "finished at")

    @admin.display(description="job", ordering="job")
    def job_link(self, obj: JobRun) -> str:
        return job_page_link(obj.job)

    # The job links to its page for those who may open it (the dashboard's permissions).
    def get_list_display(self, request: HttpRequest) -> Any:
        return _job_column(request, super().get_list_display(request))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return _job_column(request, super().get_fields(request, obj))

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: JobRun) -> str:
        return status_badge(obj.status)

    @admin.display(description="Celery result")
    def celery_result(self, obj: JobRun) -> str:
        result = TaskResult.objects.filter(task_id=obj.task_id).first() if obj.task_id else None
        if result is None:
            return "-"
        url = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
        return format_html('<a href="{}">{} ({})</a>', url, result.task_id, result.status)

    @admin.display(description="traceback")
    def traceback_text(self, obj: JobRun) -> str:
        return format_html("<pre>{}</pre>", obj.traceback) if obj.traceback else "-"

    @admin.action(
        description="Retry selected failed runs (next attempt, same slot)", permissions=["retry"]
    )
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[JobRun]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, runs_retry(actor=_actor(request), run_ids=ids))

    def has_retry_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(RETRY_RUN)

    def _report(self, request: HttpRequest, results: list[Any]) -> None:
        for result in results:
            if result.error:
                self.message_user(request, result.error, level=messages.WARNING)
            else:
                new = result.retried
                url = reverse("admin:scheduler_jobrun_change", args=[new.pk])
                self.message_user(
                    request,
                    format_html(
                        'run {} retried as <a href="{}">#{}</a> (attempt {}, {})',
                        result.run_id,
                        url,
                        new.pk,
                        new.attempt,
                        new.status,
                    ),
                )

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:object_id>/retry/",
                self.admin_site.admin_view(require_POST(self.retry_view)),
                name="scheduler_jobrun_retry",
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if not self.has_retry_permission(request):
            return HttpResponse(status=403)
        self._report(request, runs_retry(actor=_actor(request), run_ids=[object_id]))
        return HttpResponseRedirect(reverse("admin:scheduler_jobrun_change", args=[object_id]))

    def render_change_form(self, request: HttpRequest, context: dict, *args: Any, **kw: Any):
        context["retryable"] = {s.value for s in RETRYABLE}
        context["can_retry"] = self.has_retry_permission(request)
        return super().render_change_form(request, context, *args, **kw)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The ledger's job view: a job's open incidents above its runs (every job's when
        # unfiltered), so operators see what was alerted where they look at runs.
        job = request.GET.get("job", "")
        extra_context = {
            **(extra_context or {}),
            **WIDE_LIST,
            "open_incidents": _open_incidents(request, [job] if job else None),
            "incidents_scope": job,
        }
        return super().changelist_view(request, extra_context)


def _job_column(request: HttpRequest, columns: Any) -> list[Any]:
    if request.user.has_perms(DASHBOARD):
        return list(columns)
    return ["job" if column == "job_link" else column for column in columns]


@admin.register(JobLease)
class JobLeaseAdmin(ReadOnlyAdmin):
    list_display = ("job", "token", "holder", "expires_at")
    search_fields = ("job",)


# ---------------------------------------------------------------------------------------------
# Alerts: incidents and their notifications, written by the watchdog (monitoring), read-only here
# ---------------------------------------------------------------------------------------------


class IncidentStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("resolved", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        if self.value() in ("open", "resolved"):
            return queryset.filter(resolved_at__isnull=self.value() == "open")
        return queryset


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    fields = ("event", "channel", "target", "status", "attempts", "last_attempt_at", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = (
        "opened_at_at_second",
        "job",
        "kind",
        "state",
        "summary",
        "occurrences",
        "resolved_at_at_second",
        "runs",
    )
    opened_at_at_second = moment_column("opened_at", "opened (UTC)")
    resolved_at_at_second = moment_column("resolved_at", "resolved (UTC)")
    list_filter = (JobNameFilter, "kind", IncidentStateFilter, ("opened_at", DateFieldListFilter))
    search_fields = ("job", "summary", "detail", "resolution")
    date_hierarchy = "opened_at"
    inlines = [AlertDeliveryInline]
    fields = (
        "job",
        "kind",
        "summary",
        "detail",
        "opened_at",
        "occurrences",
        "first_run",
        "last_run",
        "resolved_at",
        "resolution",
        "runs",
    )
    readonly_fields = ("first_run", "last_run", "runs")
    actions = ("close_incidents",)

    @admin.action(
        description="Close selected open incidents by hand (sends a resolved notice)",
        permissions=["close"],
    )
    def close_incidents(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = incidents_close(actor=_actor(request), incident_ids=ids)
        self.message_user(request, f"{count} incident(s) closed.")

    def has_close_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(CLOSE_INCIDENT)

    @admin.display(description="state")
    def state(self, obj: Incident) -> str:
        colour = "#c62828" if obj.is_open else "#2e7d32"
        label = "open" if obj.is_open else "resolved"
        return format_html('<span style="color:{};font-weight:bold">{}</span>', colour, label)

    @admin.display(description="runs")
    def runs(self, obj: Incident) -> str:
        url = reverse("admin:scheduler_jobrun_changelist") + f"?job={obj.job}"
        return format_html('<a href="{}">{} runs</a>', url, obj.job)

    @admin.display(description="first run")
    def first_run(self, obj: Incident) -> str:
        return _run_link(obj.first_run_id, obj.first_slot)

    @admin.display(description="last run")
    def last_run(self, obj: Incident) -> str:
        return _run_link(obj.last_run_id, obj.last_slot)


def _run_link(run_id: int | None, slot: datetime | None) -> str:
    if run_id is None or slot is None:
        return "-"  # an outage that has cost no slot (yet)
    # The ledger row may have been pruned by retention; the slot is kept on the incident.
    when = f"{slot:%Y-%m-%d %H:%M:%S} UTC"
    if not JobRun.objects.filter(pk=run_id).exists():
        return f"#{run_id} (pruned), slot {when}"
    url = reverse("admin:scheduler_jobrun_change", args=[run_id])
    return format_html('<a href="{}">#{}</a>, slot {}', url, run_id, when)


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "incident", "event", "channel", "target", "status", "attempts")
    list_filter = ("status", "channel", "event")
    search_fields = ("incident__job", "target", "error")
    list_select_related = ("incident",)


# ---------------------------------------------------------------------------------------------
# The audit trail: read-only, never deleted here
# ---------------------------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at_at_second",
        "username",
        "ip",
        "via",
        "action",
        "object_repr",
        "changes",
    )
    created_at_at_second = moment_column("created_at", "when (UTC)")
    list_filter = ("action", "via", "object_type", ("created_at", DateFieldListFilter))
    search_fields = ("username", "object_repr", "reason")
    date_hierarchy = "created_at"
    fields = (
        "created_at",
        "user",
        "username",
        "ip",
        "via",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "reason",
        "changes",
        "before_json",
        "after_json",
    )
    readonly_fields = ("changes", "before_json", "after_json")

    @admin.display(description="changes")
    def changes(self, obj: AuditEvent) -> str:
        before, after = obj.before or {}, obj.after or {}
        keys = [k for k in {**before, **after} if before.get(k) != after.get(k)]
        return format_html_join(
            "; ", "{}: {} → {}", ((k, _short(before.get(k)), _short(after.get(k))) for k in keys)
        )

    @admin.display(description="before")
    def before_json(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.after, indent=2, sort_keys=True))


def _short(value: object) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 40 else text[:39] + "…"
