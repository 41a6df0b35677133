"""Alert settings from the environment; a bad value is an error that names its variable.

Read through `load()` at each use (so a test's `monkeypatch.setenv` applies at once, and beat
picks up nothing stale), and once at startup by the system check in `ops.checks`, so a typo
stops `manage.py check` before beat evaluates anything with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from jobsite.env import ConfigError, env_int, env_list, env_str, env_url


@dataclass(frozen=True)
class AlertSettings:
    emails: tuple[str, ...]  # recipients of alert mail (Django's email backend); empty: no mail
    webhook_url: str  # JSON POST {"text": ...} (Slack-compatible); empty: no webhook
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


def _emails() -> tuple[str, ...]:
    addresses = env_list("JOBSITE_ALERT_EMAILS", [])
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ConfigError(
                f"JOBSITE_ALERT_EMAILS: {address!r} is not an e-mail address "
                "(comma-separated, e.g. ops@example.com,oncall@example.com)"
            ) from None
    return tuple(addresses)


def load() -> AlertSettings:
    webhook = env_str("JOBSITE_ALERT_WEBHOOK_URL", "").strip()
    if webhook:
        webhook = env_url("JOBSITE_ALERT_WEBHOOK_URL", "", schemes=("https", "http"))
        if not urlsplit(webhook).hostname:
            raise ConfigError("JOBSITE_ALERT_WEBHOOK_URL names no host; expected https://host/...")
    return AlertSettings(
        emails=_emails(),
        webhook_url=webhook,
        failures=env_int("JOBSITE_ALERT_FAILURES", 3, minimum=1, maximum=1000),
        lateness_seconds=env_int("JOBSITE_ALERT_LATENESS_SECONDS", 60, minimum=1, maximum=86_400),
        # Deliveries run on a thread beside beat (ops.alerts), so this bounds how long one alert
        # may take, not how long beat waits.
        timeout_seconds=env_int("JOBSITE_ALERT_TIMEOUT_SECONDS", 5, minimum=1, maximum=60),
    )
