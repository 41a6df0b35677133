"""Input and output shapes of the ops API. Input fields are strict: a string is not an offset,
1 is not a boolean; every refusal names its field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import QueryDict
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from scheduler.cron import Cron
from scheduler.models import JobRun
from scheduler.registry import QUEUES, all_jobs, find_job
from scheduler.services.writes import parse_cron
from scheduler.validators import (
    OFFSET_ERROR,
    OFFSET_MAX,
    OFFSET_MIN,
    WriteRefused,
    validate_offset,
)


class StrictIntegerField(serializers.IntegerField):
    """JSON integers only: DRF's IntegerField would also take "12" and 12.0."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        self.message = message
        super().__init__(**kwargs)
        self.error_messages.update(
            invalid=message, max_value=message, min_value=message, max_string_length=message
        )

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError(self.message)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            raise serializers.ValidationError("Must be true or false.")
        return data


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        return super().to_internal_value(data)


class CronField(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            help_text="Five fields (minute hour day-of-month month day-of-week, UTC) or @hourly, "
            "@daily, @weekly, @monthly, @yearly.",
            **kwargs,
        )

    def to_internal_value(self, data: Any) -> Cron:  # type: ignore[override]
        text = super().to_internal_value(data)
        if len(text) > 200:  # checked here: validators would run on the parsed Cron
            raise serializers.ValidationError("Longer than 200 characters.")
        try:
            return parse_cron(text)
        except WriteRefused as exc:
            raise serializers.ValidationError(exc.message) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class JobNameField(StrictCharField):
    """A job's name. The schema lists the registered jobs (an enum, read when the schema is
    generated); the serializer using it checks the name (`validate_job`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=100, **kwargs)


def job_names() -> list[str]:
    return sorted(job.name for job in all_jobs())


class JobNameSchema(OpenApiSerializerFieldExtension):
    target_class = JobNameField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        return {"type": "string", "enum": job_names()}


class JobNameParameter(OpenApiParameter):
    """An OpenApiParameter whose enum is the registered jobs, read when the schema is generated
    (jobs register when their app loads, after this module may have been imported)."""

    @property
    def enum(self) -> list[str]:
        return job_names()

    @enum.setter
    def enum(self, value: Any) -> None:
        pass  # OpenApiParameter.__init__ assigns one; the registry is the owner


# The `{name}` of /api/jobs/{name}/…: a registered job; any other is 404.
job_name_in_path = JobNameParameter(
    "name", str, OpenApiParameter.PATH, description="A registered job; any other is 404."
)

# The `{name}` of /api/schedules/{name}/…: one path segment; a name without a schedule is 404.
# Not an enum: schedules come and go (create, delete) while the schema stays.
schedule_name_in_path = OpenApiParameter(
    "name",
    str,
    OpenApiParameter.PATH,
    pattern=r"^[^/]+$",
    description="A schedule's name (a job's name for job schedules); none such is 404.",
)


def offset_field(**kwargs: Any) -> StrictIntegerField:
    return StrictIntegerField(
        message=OFFSET_ERROR,
        min_value=OFFSET_MIN,  # also the schema's minimum and maximum
        max_value=OFFSET_MAX,
        validators=[validate_offset],
        help_text="Seconds after the minute boundary at which the job starts (0-59).",
        **kwargs,
    )


def priority_field(**kwargs: Any) -> StrictIntegerField:
    return StrictIntegerField(
        message="Must be a whole number between 0 (highest) and 9.",
        min_value=0,
        max_value=9,
        **kwargs,
    )


class ScheduleUpdateSerializer(serializers.Serializer):
    cron = CronField(required=False)
    offset = offset_field(required=False)
    enabled = StrictBooleanField(required=False)
    queue = serializers.ChoiceField(choices=QUEUES, required=False)
    priority = priority_field(required=False)


class ScheduleCreateSerializer(ScheduleUpdateSerializer):
    job = JobNameField(help_text="A registered job without a schedule (one that has: 409).")
    cron = CronField()
    offset = offset_field()

    def validate_job(self, value: str) -> str:
        if find_job(value) is None:
            raise serializers.ValidationError(f"unknown job {value!r}")
        return value


class TriggerSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=200, required=False, allow_blank=True)


class RetrySerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=StrictIntegerField(message="Must be a run id (an integer).", min_value=1),
        min_length=1,
        max_length=500,
    )
    reason = StrictCharField(max_length=200, required=False, allow_blank=True)


class QueryFlagField(serializers.Field):
    """A boolean in a query string: exactly `1`, `0`, `true` or `false`.

    A flag that guards a write (`dry_run`) must fail closed: `on`, `yes`, `null`, an empty value or
    a typo is a 400, never silently "false" and a real write.
    """

    VALUES = {"1": True, "true": True, "0": False, "false": False}

    def get_value(self, dictionary: Mapping[str, Any]) -> Any:
        # DRF reads an empty `?dry_run=` of an optional field as "not given": refuse it instead.
        if self.field_name in dictionary:
            return dictionary[self.field_name]
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any) -> bool:
        # Exactly the schema's enum: `True` or `TRUE` is refused like any other value.
        if isinstance(data, str) and data in self.VALUES:
            return self.VALUES[data]
        raise serializers.ValidationError("Must be 1, 0, true or false.")

    def to_representation(self, value: Any) -> bool:
        return bool(value)


def query_valid(
    serializer_class: type[serializers.Serializer], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate a query string strictly: an unknown, repeated or empty parameter is refused by
    name.

    A misspelt flag (`?dryrun=1`) on a write would otherwise be ignored and the write would
    happen; `?dry_run=1&dry_run=0` is ambiguous.
    """
    accepted = serializer_class().fields
    errors: dict[str, list[str]] = {}
    for name in params:
        if name not in accepted:
            allowed = ", ".join(accepted) or "none"
            errors[name] = [f"Unknown query parameter; this endpoint accepts: {allowed}."]
        elif isinstance(params, QueryDict) and len(params.getlist(name)) > 1:
            errors[name] = ["Given more than once."]
        elif params[name] == "":
            # DRF reads `?offset=` of an optional field as "not given": the schema says a value.
            errors[name] = ["Given without a value."]
    if errors:
        raise serializers.ValidationError(errors)
    serializer = serializer_class(data=params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class NoQuerySerializer(serializers.Serializer):
    """Write endpoints without query parameters (trigger, retry, delete)."""


class DryRunQuerySerializer(serializers.Serializer):
    dry_run = QueryFlagField(
        required=False,
        default=False,
        help_text="1 or true: validate and answer the preview (next runs, collisions); write "
        "nothing. 0 or false (the default): write. Any other value is refused (400).",
    )


class HistoryQuerySerializer(serializers.Serializer):
    job = JobNameField(
        required=False,
        help_text="A registered job. (A job no longer registered whose runs are still in the "
        "ledger is also accepted; any other name is 400.)",
    )
    status = serializers.ChoiceField(choices=JobRun.Status.choices, required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=50)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=10**9, default=0)

    def validate_job(self, value: str) -> str:
        if find_job(value) is None and not JobRun.objects.filter(job=value).exists():
            raise serializers.ValidationError(f"unknown job {value!r}")
        return value


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobRun
        fields = (
            "id",
            "job",
            "slot",
            "attempt",
            "status",
            "trigger",
            "user",
            "reason",
            "task_id",
            "worker",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "lateness_ms",
            "result",
            "error",
            "duplicate_of",
        )


class CollisionSerializer(serializers.Serializer):
    offset = serializers.IntegerField()
    jobs = serializers.ListField(child=serializers.CharField())
    seconds = serializers.IntegerField(help_text="Start-seconds a week with two or more jobs.")
    first = serializers.DateTimeField()
    peak = serializers.IntegerField()


class ScheduleSerializer(serializers.Serializer):
    name = serializers.CharField()
    job = serializers.CharField(allow_null=True)
    task = serializers.CharField()
    enabled = serializers.BooleanField()
    cron = serializers.CharField(allow_null=True)
    offset = serializers.IntegerField(allow_null=True)
    six_field = serializers.CharField(allow_null=True)
    queue = serializers.CharField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True)
    next_runs = serializers.ListField(child=serializers.DateTimeField())
    last_run_at = serializers.DateTimeField(allow_null=True)


class ScheduleChangeSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    schedule = ScheduleSerializer(allow_null=True)
    next_runs = serializers.ListField(child=serializers.DateTimeField())
    collisions = CollisionSerializer(many=True)
    warning = serializers.CharField(allow_blank=True)


class JobStatsSerializer(serializers.Serializer):
    runs = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)
    duration_mean_ms = serializers.FloatField(allow_null=True)
    duration_p50_ms = serializers.FloatField(allow_null=True)
    duration_p95_ms = serializers.FloatField(allow_null=True)
    lateness_p99_ms = serializers.FloatField(allow_null=True)
    skipped_lock = serializers.IntegerField()
    duplicate = serializers.IntegerField()


class LastRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    slot = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    lateness_ms = serializers.IntegerField(allow_null=True)


class JobSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    enabled = serializers.BooleanField()
    cron = serializers.CharField(allow_null=True)
    offset = serializers.IntegerField(allow_null=True)
    six_field = serializers.CharField(allow_null=True)
    queue = serializers.CharField()
    next_run = serializers.DateTimeField(allow_null=True)
    next_runs = serializers.ListField(child=serializers.DateTimeField())
    last_run = LastRunSerializer(allow_null=True)
    stats = JobStatsSerializer(help_text="Over the last 24 hours.")


class TriggeredSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    job = serializers.CharField()
    status = serializers.CharField()
    slot = serializers.DateTimeField()


class RetryResultSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    retried_run_id = serializers.IntegerField(allow_null=True)
    attempt = serializers.IntegerField(allow_null=True)
    status = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
