"""Task arguments that look like secrets never leave the publisher in clear text.

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

MASK = "********"
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|auth|credential|private[-_]?key|signature",
    re.IGNORECASE,
)


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
