"""Typed reading of environment variables; every bad value names its variable.

Settings read the environment once, at import. A wrong value must stop the process with one line
that says which variable is wrong and what it should look like, before anything starts.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal, InvalidOperation
from types import TracebackType
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ImproperlyConfigured):
    """An environment variable holds a value jobsite cannot use."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off"
    )


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        raise ConfigError(f"{name}={value} is outside the allowed range {low}..{high}")
    return value


def env_decimal(name: str, default: str, *, places: int) -> Decimal:
    """A fraction such as "0.10": an exact decimal in 0..1 with at most `places` places."""
    raw = os.environ.get(name, default)
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is not a decimal number like 0.10") from None
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(1):
        raise ConfigError(f"{name}={raw!r} is outside 0..1 (0.10 means 10 %)")
    if value != value.quantize(Decimal(1).scaleb(-places)):
        raise ConfigError(f"{name}={raw!r} has more than {places} decimal places")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    """A URL whose scheme is one of `schemes` and that names a host."""
    raw = os.environ.get(name, default)
    if not raw:
        raise ConfigError(f"{name} is empty; expected a URL like {schemes[0]}://host:port/...")
    try:
        parts = urlsplit(raw)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError as exc:
        raise ConfigError(f"{name} is not a valid URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ConfigError(
            f"{name} has scheme {parts.scheme or '(none)'!r}; expected one of {', '.join(schemes)}"
        )
    if not parts.hostname and not parts.path:
        raise ConfigError(f"{name} names no host; expected {schemes[0]}://host:port/...")
    del port
    return raw


def redis_db_number(name: str, url: str) -> None:
    path = urlsplit(url).path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(f"{name} database part {path!r} is not a number (redis://host:port/N)")


def install_config_error_hook() -> None:
    """An uncaught ConfigError (e.g. `celery -A jobsite worker` with DEBUG=maybe) prints one line
    naming the variable instead of a traceback."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if issubclass(kind, ConfigError):
            print(f"configuration error: {error}", file=sys.stderr)
            return
        previous(kind, error, trace)

    sys.excepthook = hook
