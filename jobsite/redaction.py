"""Secrets never leave in clear text: task arguments (below) and URLs on Django's error page.

With DEBUG on, Django's error page (and its error e-mails) list every setting and the request's
data; `UrlPasswordReporterFilter` masks the password of every URL-shaped value there.

Task arguments that look like secrets never leave the publisher in clear text.

With `result_extended`, django-celery-results stores every task's arguments, and Flower shows
them from the worker's events. Both take the `argsrepr` / `kwargsrepr` message headers when they
are set, so a publisher-side signal rewrites those two headers with secret-looking values masked;
the task itself still receives the real arguments in the message body.

A value is secret-looking when its key (at any depth of dicts) names a credential.
"""

from __future__ import annotations

import re
from typing import Any

from celery.signals import before_task_publish
from celery.utils.saferepr import saferepr
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

MASK = "********"
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|private[-_]?key|signature",
    re.IGNORECASE,
)


# scheme://user:PASSWORD@host, anywhere in a string (DATABASE_URL, REDIS_URL, a DSN in an error).
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)", re.IGNORECASE)


def url_password_masked(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` replaced by MASK."""
    return URL_PASSWORD.sub(lambda match: match["head"] + MASK, str(text))  # lazy str too


class UrlPasswordReporterFilter(SafeExceptionReporterFilter):
    """Django's filter (settings named like KEY, PASS, SECRET, TOKEN...) plus URL passwords."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        return url_password_masked(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        return [
            (name, url_password_masked(value) if isinstance(value, str) else value)
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


class UrlPasswordExceptionReporter(ExceptionReporter):
    """The error's own message may quote a URL too (`cannot reach redis://:pw@...`)."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        if "exception_value" in data:
            data["exception_value"] = url_password_masked(data["exception_value"])
        return data


def redacted(value: Any) -> Any:
    """`value` with every dict entry under a secret-looking key replaced by MASK."""
    if isinstance(value, dict):
        return {
            key: MASK if isinstance(key, str) and SECRET_KEY.search(key) else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redacted(item) for item in value)
    return value


@before_task_publish.connect(dispatch_uid="jobsite.redaction")
def redact_argument_headers(
    body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    # Protocol 2 only (Celery's default): body is (args, kwargs, embed), headers carry the reprs.
    if headers is None or not isinstance(body, tuple) or len(body) != 3:
        return
    args, kwargs, _embed = body
    safe_args, safe_kwargs = redacted(args), redacted(kwargs)
    if safe_args != args:
        headers["argsrepr"] = saferepr(safe_args)
    if safe_kwargs != kwargs:
        headers["kwargsrepr"] = saferepr(safe_kwargs)
