"""System check: referral settings from the environment are valid (the message names the
variable), and the configured payout channel can be built."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register

from jobsite.env import ConfigError


@register()
def referrals_settings_check(app_configs: Any = None, **kwargs: Any) -> list[Error]:
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
    return []
