"""System check: referral settings from the environment are valid (the message names the
variable), the configured payout channel can be built, and no retired variable is still set."""

from __future__ import annotations

import os
from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register

from jobsite.env import ConfigError


@register()
def referrals_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from referrals import conf
    from referrals.payouts import PayoutError, payout_channel

    try:
        conf.load()
    except ConfigError as exc:
        return [Error(str(exc), id="referrals.E001")]
    try:
        payout_channel()
    except (ImportError, PayoutError) as exc:
        return [Error(f"REFERRAL_PAYOUT_CHANNEL: {exc}", id="referrals.E002")]
    if "REFERRAL_SETTLEMENT_MAX_SECONDS" in os.environ:
        return [
            Warning(
                "REFERRAL_SETTLEMENT_MAX_SECONDS is no longer read: the settlement job's time "
                "budget (referrals/jobs.py, checked below its Celery soft time limit) is its one "
                "limit; remove the variable.",
                id="referrals.W001",
            )
        ]
    return []
