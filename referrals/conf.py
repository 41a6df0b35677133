"""The referral settings group, `settings.REFERRALS`, parsed once by jobsite/settings.py from the
environment: a bad value stops the process, naming its variable, before a job runs with a wrong
rate. `load()` reads `django.conf.settings` at each call, so the `settings` fixture and
`override_settings` apply at once.

Rates are exact decimals ("0.10"), never floats, with at most four places (the column is
numeric(5,4)), within 0..1, and non-increasing by tier (tier 1 >= tier 2 >= tier 3). The last rule
is what lets tiers 2 and 3 be derived from tier-1 rewards: rounding is monotone, so when a tier-1
reward rounds to 0.00 (and is not created), the tier-2 and tier-3 ones would round to 0.00 too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

DEFAULT_RATES = {1: "0.10", 2: "0.05", 3: "0.02"}
RATE_PLACES = 4
# Variables no longer read; `referrals.W001` tells an operator who still sets one.
RETIRED_VARIABLES = ("REFERRAL_SETTLEMENT_MAX_SECONDS",)


@dataclass(frozen=True)
class ReferralSettings:
    rates: dict[int, Decimal]  # tier -> rate, e.g. {1: Decimal("0.10"), ...}
    tier_batch_size: int
    tier_lag_seconds: int
    settlement_batch_size: int
    item_max_attempts: int
    item_retry_seconds: int
    payout_channel: str
    payout_retry_seconds: int
    payout_retry_cap_seconds: int
    webhook_url: str
    # Out of repr: diffsettings and Django's debug page print settings groups whole.
    webhook_secret: str = field(repr=False)
    webhook_timeout_seconds: int
    retired_variables: tuple[str, ...] = ()  # those of RETIRED_VARIABLES set at start


def load() -> ReferralSettings:
    return settings.REFERRALS
