"""System check: the configured payout channel can be built, and no retired variable is still
set (settings refuse a bad value themselves, at start, naming its variable)."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Warning, register


@register()
def referrals_settings_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from referrals import conf
    from referrals.payouts import PayoutError, payout_channel

    try:
        payout_channel()
    except (ImportError, PayoutError) as exc:
        return [Error(f"REFERRAL_PAYOUT_CHANNEL: {exc}", id="referrals.E002")]
    if "REFERRAL_SETTLEMENT_MAX_SECONDS" in conf.load().retired_variables:
        return [
            Warning(
                "REFERRAL_SETTLEMENT_MAX_SECONDS is no longer read: the settlement job's time "
                "budget (referrals/jobs.py, checked below its Celery soft time limit) is its one "
                "limit; remove the variable.",
                id="referrals.W001",
            )
        ]
    return []
