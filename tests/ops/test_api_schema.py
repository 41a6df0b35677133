"""Property-based run of the ops API against its own OpenAPI schema, with every schemathesis
check: no 5xx, every status, content type, body and header is the documented one, data the schema
allows is accepted and data it forbids refused, credentials are enforced.

In-process through Django's WSGI application (schemathesis' WSGI support), with a staff token,
on the test database; messages of triggered runs are sent on commit only, which never happens
inside the test's transaction, so nothing reaches the broker. Deterministic (`derandomize`) and
small (a dozen examples per operation and mode): about a minute.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from jsonschema import Draft4Validator
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup

pytestmark = pytest.mark.django_db

# A check off for one operation, each with its reason; every other check runs everywhere.
NOT_FOR = {
    # Whether input is valid depends on what exists, which a schema cannot say: the ids must be
    # runs in the ledger that failed (a random id is a 400 naming `ids`, all or nothing).
    "POST /api/executions/retry": {"positive_data_acceptance"},
    # A cron's validity (ranges per field, a day that exists: `0 0 31 2 *` never fires) is more
    # than a pattern can say; a random string the schema allows is a 400 naming `cron`.
    "POST /api/schedules/": {"positive_data_acceptance"},
    "PATCH /api/schedules/{name}/": {"positive_data_acceptance"},
    "PUT /api/schedules/{name}/": {"positive_data_acceptance"},
}


@contextmanager
def wsgi_app():
    """Django's WSGI application on the test's transaction: as Django's own test client does, the
    connection is not closed between requests (it would be, being inside the test's atomic).
    Django's test client connects the handler again after each of its own requests."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def all_checks():
    load_all_checks()
    return CHECKS.get_all()


def test_the_api_answers_what_its_schema_says_under_every_check(runs, staff_token, settings):
    settings.ALLOWED_HOSTS = ["localhost"]  # the host schemathesis' WSGI client sends
    headers = {"Authorization": f"Token {staff_token}"}
    checks = all_checks()
    failures: dict[tuple[str, str], str] = {}
    with wsgi_app() as app:
        schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app, headers=headers)
        for result in schema.get_all_operations():
            operation = result.ok()
            off = NOT_FOR.get(operation.label, set())
            in_force = [check for check in checks if check.__name__ not in off]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run_operation(operation, mode, headers, in_force, failures)
                if operation.path.startswith("/api/schedules/{name}"):
                    # A drawn name is never a schedule (always 404): also on a real one.
                    real = {"name": "cleanup" if operation.method == "delete" else "settlement"}
                    run_operation(operation, mode, headers, in_force, failures, real)
    assert failures == {}, "\n\n".join(failures.values())


def test_every_check_off_somewhere_exists_and_every_operation_named_exists(api):
    body = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    schema = schemathesis.openapi.from_dict(json.loads(body))
    labels = {result.ok().label for result in schema.get_all_operations()}
    names = {check.__name__ for check in all_checks()}
    assert set(NOT_FOR) <= labels
    assert set().union(*NOT_FOR.values()) <= names


def sent_as_generated(case) -> bool:
    """False for a case with an empty object or array in the query: form style sends it as no
    parameter at all, so the "invalid" request that reaches the API is a valid one."""
    return not any(value in ({}, []) for value in (case.query or {}).values())


def run_operation(op, mode, headers, checks, failures, path_parameters=None) -> None:
    strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @hypothesis_settings(
        max_examples=12,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy.filter(sent_as_generated))
    def check(case):
        try:
            case.call_and_validate(headers=headers, checks=checks)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = (op.label, type(failure).__name__)
                failures.setdefault(
                    key,
                    f"{op.label} [{mode.value}] {failure.title}: {failure.message}\n"
                    f"  query={case.query} path={case.path_parameters} body={case.body!r}",
                )

    try:
        check()
    except Unsatisfiable:
        # Nothing in the operation can be made invalid (GET /api/schedules/{name}/ takes one
        # string of any shape): there is no negative data to send.
        if mode is not GenerationMode.NEGATIVE:
            raise
        print("no negative data for", op.label)


# --- the schema and the views agree, case by case ------------------------------------------------


def openapi(api) -> dict:
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    return json.loads(response.content)


def query_schema(document: dict, path: str, name: str) -> dict:
    parameters = document["paths"][path]["get"]["parameters"]
    return next(p["schema"] for p in parameters if p["in"] == "query" and p["name"] == name)


def test_history_of_job_0_is_refused_by_the_schema_and_by_the_api(api, runs):
    job = query_schema(openapi(api), "/api/jobs/history", "job")

    response = api.get("/api/jobs/history", {"job": "0"})

    assert not Draft4Validator(job).is_valid("0")
    assert Draft4Validator(job).is_valid("referral-tier3")
    assert response.status_code == 400
    assert "unknown job '0'" in response.json()["job"][0]


@pytest.mark.parametrize(
    "query",
    ["dry_run=TRUE", "dry_run=yes", "dry_run=", "dry_run=1&dry_run=0", "dryrun=1"],
)
def test_a_dry_run_outside_the_schemas_enum_is_400(api, schedules, query):
    response = api.post(f"/api/schedules/cleanup/toggle?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


def test_dry_run_takes_exactly_the_values_the_schema_lists(api):
    toggle = openapi(api)["paths"]["/api/schedules/{name}/toggle"]["post"]
    dry_run = next(p["schema"] for p in toggle["parameters"] if p["name"] == "dry_run")
    assert sorted(dry_run["enum"]) == ["0", "1", "false", "true"]


@pytest.mark.parametrize("query", ["offset=", "limit=", "status="])
def test_a_history_parameter_without_a_value_is_400_naming_it(api, runs, query):
    response = api.get(f"/api/jobs/history?{query}")
    assert response.status_code == 400
    assert query.rstrip("=") in response.json()


def test_a_nul_in_an_api_address_is_the_apis_json_400_naming_the_parameter(api, runs):
    response = api.get("/api/jobs/history?job=a%00b")
    assert response.status_code == 400
    assert response.json() == {"job": ["The address contains a NUL character."]}


def test_every_operation_documents_its_errors(api):
    document = openapi(api)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert {"401", "403"} <= codes, (method, path)
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            if "{" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= codes, (method, path)
    create = document["paths"]["/api/schedules/"]["post"]["responses"]
    assert create["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FieldErrors"
    }
    assert document["components"]["schemas"]["Error"]["required"] == ["detail"]
