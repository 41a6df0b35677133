"""The alert settings group, `settings.ALERTS`, parsed once by jobsite/settings.py from the
environment: a bad value stops the process, naming its variable, before beat evaluates anything
with it. `load()` reads `django.conf.settings` at each call, so the `settings` fixture and
`override_settings` apply at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings


@dataclass(frozen=True)
class AlertSettings:
    emails: tuple[str, ...]  # recipients of alert mail (Django's email backend); empty: no mail
    # JSON POST {"text": ...} (Slack-compatible); empty: no webhook. Out of repr (diffsettings,
    # Django's debug page): a chat webhook's path is its secret; `webhook_target` is safe to show.
    webhook_url: str = field(repr=False)
    failures: int  # consecutive failed runs that open an incident
    lateness_seconds: int  # a beat run starting later than this after its slot opens one
    timeout_seconds: int  # per delivery (SMTP connection, webhook request)

    @property
    def channels(self) -> list[str]:
        return [
            name
            for name, configured in (("email", self.emails), ("webhook", self.webhook_url))
            if configured
        ]

    @property
    def webhook_target(self) -> str:
        """Where the webhook goes, without its path: a chat webhook's path is its secret."""
        parts = urlsplit(self.webhook_url)
        return f"{parts.scheme}://{parts.netloc}" if self.webhook_url else ""


def load() -> AlertSettings:
    return settings.ALERTS
