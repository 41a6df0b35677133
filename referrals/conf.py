"""Referral settings from the environment; a bad value is an error that names its variable.

Read through `load()` at each use, so a test's `monkeypatch.setenv` applies at once, and once at
startup by the system check in `referrals.checks`, so a typo stops `manage.py check` and every
process before a job runs with a wrong rate.

Rates are exact decimals ("0.10"), never floats, with at most four places (the column is
numeric(5,4)), within 0..1, and non-increasing by tier (tier 1 >= tier 2 >= tier 3). The last rule
is what lets tiers 2 and 3 be derived from tier-1 rewards: rounding is monotone, so when a tier-1
reward rounds to 0.00 (and is not created), the tier-2 and tier-3 ones would round to 0.00 too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from jobsite.env import ConfigError, env_int, env_str

DEFAULT_RATES = {1: "0.10", 2: "0.05", 3: "0.02"}
RATE_PLACES = 4


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
    webhook_secret: str
    webhook_timeout_seconds: int


def env_rate(name: str, default: str) -> Decimal:
    """A rate such as "0.10": a decimal in 0..1 with at most four places."""
    raw = os.environ.get(name, default)
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ConfigError(f"{name}={raw!r} is not a decimal number like 0.10") from None
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(1):
        raise ConfigError(f"{name}={raw!r} is outside 0..1 (0.10 means 10 %)")
    if value != value.quantize(Decimal(1).scaleb(-RATE_PLACES)):
        raise ConfigError(f"{name}={raw!r} has more than {RATE_PLACES} decimal places")
    return value


def load() -> ReferralSettings:
    rates = {
        tier: env_rate(f"REFERRAL_TIER{tier}_RATE", default)
        for tier, default in DEFAULT_RATES.items()
    }
    for tier in (2, 3):
        if rates[tier] > rates[tier - 1]:
            raise ConfigError(
                f"REFERRAL_TIER{tier}_RATE={rates[tier]} exceeds "
                f"REFERRAL_TIER{tier - 1}_RATE={rates[tier - 1]}; rates must not grow with the tier"
            )
    return ReferralSettings(
        rates=rates,
        # One batch of tier-2/3 creation reads this many tier-1 rewards: ~10k rows, well under a
        # second and a few MB on the reference machine.
        tier_batch_size=env_int("REFERRAL_TIER_BATCH_SIZE", 10_000, minimum=1, maximum=1_000_000),
        # Each run re-reads tier-1 rewards of events this far behind its cursor, so an event whose
        # finishing transaction committed late is still picked up. Must exceed the longest
        # session-finishing transaction by far; an hour of events is cheap to re-read.
        tier_lag_seconds=env_int("REFERRAL_TIER_LAG_SECONDS", 3600, minimum=0),
        # Items claimed per settlement batch (one transaction). 5k items: ~0.25 s and a few MB
        # with the in-database wallet channel on the reference machine; 1k items cost ~1.5x more
        # per item (per-batch overhead). Payout calls happen between the batch's claim and
        # record transactions, outside both, so an external channel holds no locks while it waits.
        settlement_batch_size=env_int(
            "REFERRAL_SETTLEMENT_BATCH_SIZE", 5000, minimum=1, maximum=100_000
        ),
        # A row a job could not process (referrals.models.FailedItem) is retried after
        # REFERRAL_ITEM_RETRY_SECONDS x 2**(attempts-1) (5, 10, 20, 40 min by default) and held
        # for staff after REFERRAL_ITEM_MAX_ATTEMPTS failed attempts (~75 min after the first).
        item_max_attempts=env_int("REFERRAL_ITEM_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        item_retry_seconds=env_int("REFERRAL_ITEM_RETRY_SECONDS", 300, minimum=1, maximum=86_400),
        payout_channel=env_str("REFERRAL_PAYOUT_CHANNEL", "referrals.payouts.WalletPayout"),
        # A player whose payout failed (or whose outcome is unknown) is retried after
        # base * 2**(failures-1) seconds, capped, times a random factor in [0.8, 1.2).
        payout_retry_seconds=env_int("REFERRAL_PAYOUT_RETRY_SECONDS", 600, minimum=1),
        payout_retry_cap_seconds=env_int("REFERRAL_PAYOUT_RETRY_CAP_SECONDS", 86_400, minimum=1),
        webhook_url=env_str("REFERRAL_PAYOUT_WEBHOOK_URL", ""),
        webhook_secret=env_str("REFERRAL_PAYOUT_WEBHOOK_SECRET", ""),
        webhook_timeout_seconds=env_int(
            "REFERRAL_PAYOUT_WEBHOOK_TIMEOUT", 10, minimum=1, maximum=60
        ),
    )
