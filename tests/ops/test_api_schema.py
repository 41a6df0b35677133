"""Property-based run of the ops API against its own OpenAPI schema: no input makes a 5xx.

In-process through Django's WSGI application (schemathesis' WSGI support), with a staff token,
on the test database; messages of triggered runs are sent on commit only, which never happens
inside the test's transaction, so nothing reaches the broker.
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.django_db


def test_no_request_the_schema_allows_makes_a_server_error(api, runs, staff_token):
    body = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").content
    schema = schemathesis.openapi.from_dict(json.loads(body))
    app = get_wsgi_application()
    headers = {"Authorization": f"Token {staff_token}"}
    failures = []
    for operation in schema.get_all_operations():
        check_operation(operation.ok(), app, headers, failures)
    assert failures == []


def check_operation(op, app, headers, failures) -> None:
    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def check(case):
        response = case.call(app=app, headers=headers)
        if response.status_code >= 500:
            failures.append((op.label, case.body, case.query, response.status_code))

    check()
