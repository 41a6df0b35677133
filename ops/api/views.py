"""The ops API: thin views over the selectors (reads) and the scheduler's services (writes:
`scheduler.services.writes`, `scheduler.services.manual_runs`, each audited).

Authentication comes from settings (REST_FRAMEWORK): per-user tokens or the admin session. Each
view declares the permissions each method needs (`staff_with`, ops.api.permissions); anonymous
callers get 401, authenticated callers who are not staff or lack one 403. Every write is in
the audit trail with the caller's address.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.permissions import (
    ADD_SCHEDULE,
    CHANGE_SCHEDULE,
    DELETE_SCHEDULE,
    RETRY_RUN,
    RUN_JOB,
    VIEW_METRICS,
    VIEW_RUN,
    VIEW_SCHEDULE,
)
from ops.actors import actor_from_request
from ops.api.exceptions import Conflict, FieldErrorsSerializer
from ops.api.pagination import ListPage, paginate
from ops.api.permissions import staff_with
from ops.api.serializers import (
    DryRunQuerySerializer,
    HistoryQuerySerializer,
    JobSerializer,
    NoQuerySerializer,
    QueryFlagField,
    RetryResultSerializer,
    RetrySerializer,
    RunSerializer,
    ScheduleChangeSerializer,
    ScheduleCreateSerializer,
    ScheduleSerializer,
    ScheduleUpdateSerializer,
    TriggeredSerializer,
    TriggerSerializer,
    job_name_in_path,
    query_valid,
    schedule_name_in_path,
)
from scheduler.audit import Actor
from scheduler.cron import Cron, CronError
from scheduler.ledger import RETRYABLE
from scheduler.models import JobRun
from scheduler.preview import Preview
from scheduler.registry import find_job, job_for_task
from scheduler.selectors import JobView, jobs_overview, next_starts
from scheduler.services.manual_runs import job_run_now, runs_retry
from scheduler.services.schedules import effective_offset
from scheduler.services.writes import schedule_create, schedule_delete, schedule_update
from scheduler.validators import WriteRefused

DRY_RUN = OpenApiParameter(
    "dry_run",
    OpenApiTypes.STR,
    enum=list(QueryFlagField.VALUES),
    description="1 or true: validate and answer the preview (next runs, collisions); write "
    "nothing. 0 or false (default): write. Any other value, or any other query parameter, is "
    "refused with 400.",
)


def _actor(request: Request) -> Actor:
    return actor_from_request(request, via="api")


def _dry_run(request: Request) -> bool:
    """The write's `dry_run` flag; any other query parameter or value is a 400 (fails closed)."""
    return query_valid(DryRunQuerySerializer, request.query_params)["dry_run"]


def _no_query(request: Request) -> None:
    """A write without query parameters: `?dry_run=1` here would otherwise be ignored."""
    query_valid(NoQuerySerializer, request.query_params)


def _refused(exc: WriteRefused) -> ValidationError:
    return ValidationError({exc.field: [exc.message]})


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def schedule_data(task: PeriodicTask) -> dict[str, Any]:
    job = job_for_task(task.task)
    stored = getattr(task, "job_schedule", None)
    offset = stored.offset_seconds if stored is not None else None
    cron = None
    upcoming: list[Any] = []
    if task.crontab_id:
        cron = Cron.from_model(task.crontab)
        if task.enabled:
            try:
                upcoming = next_starts(cron, offset or 0, now=timezone.now(), count=5)
            except CronError:
                upcoming = []
    return {
        "name": task.name,
        "job": job.name if job else None,
        "task": task.task,
        "enabled": task.enabled,
        "cron": str(cron) if cron else None,
        "offset": offset,
        "six_field": cron.six_field(effective_offset(offset or 0)) if cron else None,
        "queue": task.queue,
        "priority": task.priority,
        "next_runs": upcoming,
        "last_run_at": task.last_run_at,
    }


def _gone(name: str) -> NotFound:
    # Deleted by a parallel request after this one found it: the same 404 as a late arrival.
    return NotFound(f"schedule {name!r} was deleted meanwhile")


def change_data(task: PeriodicTask | None, preview: Preview, *, dry_run: bool) -> dict[str, Any]:
    if task is not None and not dry_run:
        # Read after the commit; a parallel DELETE may have removed it since (then None).
        task = (
            PeriodicTask.objects.select_related("crontab", "job_schedule")
            .filter(pk=task.pk)
            .first()
        )
    return {
        "dry_run": dry_run,
        "schedule": schedule_data(task) if task is not None and not dry_run else None,
        "next_runs": preview.next_runs,
        "collisions": [
            {
                "offset": c.offset,
                "jobs": c.jobs,
                "seconds": c.seconds,
                "first": c.first,
                "peak": c.peak,
            }
            for c in preview.collisions
        ],
        "warning": preview.warning(),
    }


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


class JobListView(APIView):
    permission_classes = [staff_with(GET=(VIEW_SCHEDULE, VIEW_RUN))]
    pagination_class = ListPage

    @extend_schema(
        responses=JobSerializer(many=True), summary="Every job: schedule, last run, statistics"
    )
    def get(self, request: Request) -> Response:
        return paginate(self, request, jobs_overview(), self.render_jobs)

    def render_jobs(self, views: list[JobView]) -> list[dict[str, Any]]:
        jobs = []
        for view in views:
            last = view.last
            jobs.append(
                {
                    "name": view.job.name,
                    "description": view.job.description,
                    "enabled": view.enabled,
                    "cron": str(view.cron) if view.cron else None,
                    "offset": view.offset,
                    "six_field": view.six_field,
                    "queue": view.task.queue if view.task and view.task.queue else view.job.queue,
                    "next_run": view.next_runs[0] if view.next_runs else None,
                    "next_runs": view.next_runs,
                    "last_run": None
                    if last is None
                    else {
                        "id": last.pk,
                        "status": last.status,
                        "slot": last.slot,
                        "started_at": last.started_at,
                        "duration_ms": last.duration_ms,
                        "lateness_ms": last.lateness_ms,
                    },
                    "stats": view.stats.as_dict(),
                }
            )
        return JobSerializer(jobs, many=True).data


class JobTriggerView(APIView):
    permission_classes = [staff_with(POST=RUN_JOB)]

    @extend_schema(
        request=TriggerSerializer,
        parameters=[job_name_in_path],
        responses={202: TriggeredSerializer},
        summary="Run a job now through the run path",
    )
    def post(self, request: Request, name: str) -> Response:
        if find_job(name) is None:
            raise NotFound(f"unknown job {name!r}")
        _no_query(request)
        data = _valid(TriggerSerializer, request.data)
        try:
            run = job_run_now(actor=_actor(request), job_name=name, reason=data.get("reason", ""))
        except WriteRefused as exc:
            raise _refused(exc) from None
        body = {"run_id": run.pk, "job": run.job, "status": run.status, "slot": run.slot}
        return Response(TriggeredSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class JobHistoryView(APIView):
    permission_classes = [staff_with(GET=VIEW_RUN)]

    @extend_schema(
        parameters=[HistoryQuerySerializer],
        responses=inline_serializer(
            "RunPage",
            {
                "count": serializers.IntegerField(),
                "limit": serializers.IntegerField(),
                "offset": serializers.IntegerField(),
                "results": RunSerializer(many=True),
            },
        ),
        summary="Ledger rows, newest first",
    )
    def get(self, request: Request) -> Response:
        query = query_valid(HistoryQuerySerializer, request.query_params)
        rows = JobRun.objects.order_by("-slot", "-attempt", "-id")
        if query.get("job"):
            rows = rows.filter(job=query["job"])
        if query.get("status"):
            rows = rows.filter(status=query["status"])
        limit, offset = query["limit"], query["offset"]
        page = rows[offset : offset + limit]
        return Response(
            {
                "count": rows.count(),
                "limit": limit,
                "offset": offset,
                "results": RunSerializer(page, many=True).data,
            }
        )


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def _schedule(name: str) -> PeriodicTask:
    return get_object_or_404(
        PeriodicTask.objects.select_related("crontab", "job_schedule"), name=name
    )


class ScheduleListView(APIView):
    permission_classes = [staff_with(GET=VIEW_SCHEDULE, POST=ADD_SCHEDULE)]
    pagination_class = ListPage

    @extend_schema(responses=ScheduleSerializer(many=True), summary="Schedules by name, a page")
    def get(self, request: Request) -> Response:
        tasks = PeriodicTask.objects.select_related("crontab", "job_schedule").order_by("name")
        return paginate(
            self,
            request,
            tasks,
            lambda page: ScheduleSerializer([schedule_data(t) for t in page], many=True).data,
        )

    @extend_schema(
        request=ScheduleCreateSerializer,
        parameters=[DRY_RUN],
        responses={
            201: ScheduleChangeSerializer,
            200: ScheduleChangeSerializer,
            409: OpenApiResponse(FieldErrorsSerializer, "The job already has a schedule."),
        },
        summary="Create the schedule of a registered job",
    )
    def post(self, request: Request) -> Response:
        data = _valid(ScheduleCreateSerializer, request.data)
        dry_run = _dry_run(request)
        try:
            task, preview = schedule_create(
                actor=_actor(request),
                job_name=data["job"],
                cron=data["cron"],
                offset=data["offset"],
                enabled=data.get("enabled", True),
                queue=data.get("queue"),
                priority=data.get("priority"),
                dry_run=dry_run,
            )
        except WriteRefused as exc:
            if exc.field == "job" and PeriodicTask.objects.filter(name=data["job"]).exists():
                raise Conflict(exc.field, exc.message) from None
            raise _refused(exc) from None
        return Response(
            change_data(task, preview, dry_run=dry_run),
            status=status.HTTP_200_OK if dry_run else status.HTTP_201_CREATED,
        )


class ScheduleDetailView(APIView):
    permission_classes = [
        staff_with(
            GET=VIEW_SCHEDULE, PATCH=CHANGE_SCHEDULE, PUT=CHANGE_SCHEDULE, DELETE=DELETE_SCHEDULE
        )
    ]

    @extend_schema(
        parameters=[schedule_name_in_path], responses=ScheduleSerializer, summary="One schedule"
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(ScheduleSerializer(schedule_data(_schedule(name))).data)

    @extend_schema(
        request=ScheduleUpdateSerializer,
        parameters=[schedule_name_in_path, DRY_RUN],
        responses=ScheduleChangeSerializer,
        summary="Change cron, offset, enabled, queue or priority (all optional)",
    )
    def patch(self, request: Request, name: str) -> Response:
        return self._update(request, name)

    @extend_schema(
        request=ScheduleUpdateSerializer,
        parameters=[schedule_name_in_path, DRY_RUN],
        responses=ScheduleChangeSerializer,
        summary="Same as PATCH: fields left out keep their value",
    )
    def put(self, request: Request, name: str) -> Response:
        return self._update(request, name)

    def _update(self, request: Request, name: str) -> Response:
        task = _schedule(name)
        data = _valid(ScheduleUpdateSerializer, request.data)
        dry_run = _dry_run(request)
        try:
            task, preview = schedule_update(
                actor=_actor(request), task=task, dry_run=dry_run, **data
            )
        except WriteRefused as exc:
            raise _refused(exc) from None
        except PeriodicTask.DoesNotExist:
            raise _gone(name) from None
        return Response(change_data(task, preview, dry_run=dry_run))

    @extend_schema(
        parameters=[schedule_name_in_path],
        responses={204: None},
        summary="Delete a schedule (its runs stay)",
    )
    def delete(self, request: Request, name: str) -> Response:
        task = _schedule(name)
        _no_query(request)
        try:
            schedule_delete(actor=_actor(request), task=task)
        except PeriodicTask.DoesNotExist:
            raise _gone(name) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScheduleToggleView(APIView):
    permission_classes = [staff_with(POST=CHANGE_SCHEDULE)]

    @extend_schema(
        request=None,
        parameters=[schedule_name_in_path, DRY_RUN],
        responses=ScheduleChangeSerializer,
        summary="Enable a disabled schedule or disable an enabled one",
    )
    def post(self, request: Request, name: str) -> Response:
        task = _schedule(name)
        dry_run = _dry_run(request)
        try:
            task, preview = schedule_update(
                actor=_actor(request), task=task, toggle=True, dry_run=dry_run
            )
        except WriteRefused as exc:
            raise _refused(exc) from None
        except PeriodicTask.DoesNotExist:
            raise _gone(name) from None
        return Response(change_data(task, preview, dry_run=dry_run))


# ---------------------------------------------------------------------------------------------
# Executions
# ---------------------------------------------------------------------------------------------


class RetryView(APIView):
    permission_classes = [staff_with(POST=RETRY_RUN)]

    @extend_schema(
        request=RetrySerializer,
        responses=inline_serializer("RetryResults", {"results": RetryResultSerializer(many=True)}),
        summary="Retry failed, lost, missed or expired runs by id (next attempt, same slot)",
    )
    def post(self, request: Request) -> Response:
        _no_query(request)
        data = _valid(RetrySerializer, request.data)
        ids = list(dict.fromkeys(data["ids"]))
        # All or nothing on bad input: unknown ids or runs that cannot be retried are refused
        # before anything is queued.
        found = dict(JobRun.objects.filter(pk__in=ids).values_list("pk", "status"))
        problems = [f"run {i} does not exist" for i in ids if i not in found]
        problems += [
            f"run {i} is {found[i]}; only failed, lost, missed or expired runs are retried"
            for i in ids
            if i in found and found[i] not in RETRYABLE
        ]
        if problems:
            raise ValidationError({"ids": problems})
        results = runs_retry(actor=_actor(request), run_ids=ids, reason=data.get("reason", ""))
        return Response(
            {
                "results": [
                    {
                        "run_id": r.run_id,
                        "retried_run_id": r.retried.pk if r.retried else None,
                        "attempt": r.retried.attempt if r.retried else None,
                        "status": r.retried.status if r.retried else None,
                        "error": r.error,
                    }
                    for r in results
                ]
            }
        )


class MetricsView(APIView):
    """Prometheus text format; needs monitoring.view_metrics (scrape with `authorization: {type:
    Token, ...}` of a user in a group that has it, e.g. jobsite viewers)."""

    permission_classes = [staff_with(GET=VIEW_METRICS)]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The body is Prometheus text whatever Accept says; skip DRF's JSON-only negotiation.
        return (self.get_renderers()[0], "text/plain")

    @extend_schema(exclude=True)
    def get(self, request: Request) -> HttpResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from ops.metrics import metrics_registry

        return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
