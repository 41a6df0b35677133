"""Who asked (`Actor`) and the audit row every write leaves (`audit_record`).

Interfaces build the actor — the admin and the API from the request (`ops.actors`), management
commands with `Actor.cli`, code that is no interface (seeding, benchmarks) with `Actor.system` —
and pass it to a service; the service calls `audit_record` inside its own transaction, so a write
and its audit row commit or roll back together.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser

from scheduler.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who asks, from where, through which interface (admin, api, cli, system)."""

    user_id: int | None
    username: str
    ip: str | None
    via: str
    # cli only: the command line ("manage.py runjob") and the OS account that ran it.
    command: str = ""
    os_user: str = ""

    @classmethod
    def cli(cls, command: str, *, user: AbstractBaseUser | None = None) -> Actor:
        """A management command run by the current OS user, on behalf of `user` if one is named
        (`runjob --user`); without one the OS user is the username recorded."""
        os_user = _os_user()
        return cls(
            user_id=user.pk if user is not None else None,
            username=user.get_username() if user is not None else os_user,
            ip=None,
            via="cli",
            command=command,
            os_user=os_user,
        )

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        """Code that is no interface: seeding, benchmarks, tests that apply the defaults."""
        return cls(user_id=None, username=name, ip=None, via="system")

    def describe(self) -> str:
        if self.via == "cli":
            return f"{self.command or 'manage.py'} by {self.os_user or self.username or 'unknown'}"
        return f"{self.via} by {self.username or 'anonymous'} from {self.ip or 'unknown address'}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return "unknown"


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_repr: str,
    object_id: object = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    """One audit row; call it inside the transaction of the write it records."""
    return AuditEvent.objects.create(
        user_id=actor.user_id,
        username=actor.username[:150],
        ip=actor.ip,
        via=actor.via,
        action=action,
        object_type=object_type,
        object_id=str(object_id or ""),
        object_repr=object_repr[:200],
        before=before,
        after=after,
        reason=reason[:255],
    )
