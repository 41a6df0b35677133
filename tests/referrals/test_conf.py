import re
from dataclasses import replace
from decimal import Decimal

import pytest

from core.env import ConfigError
from jobsite.settings import referral_settings
from referrals import conf


def test_default_rates_are_ten_five_and_two_percent():
    assert conf.load().rates == {1: Decimal("0.10"), 2: Decimal("0.05"), 3: Decimal("0.02")}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten", "REFERRAL_TIER2_RATE='ten' is not a decimal number"),
        ("1.5", "REFERRAL_TIER2_RATE='1.5' is outside 0..1"),
        ("-0.01", "REFERRAL_TIER2_RATE='-0.01' is outside 0..1"),
        ("NaN", "REFERRAL_TIER2_RATE='NaN' is outside 0..1"),
        ("0.05125", "REFERRAL_TIER2_RATE='0.05125' has more than 4 decimal places"),
    ],
)
def test_a_bad_rate_names_its_variable(monkeypatch, value, message):
    # given a bad tier-2 rate
    monkeypatch.setenv("REFERRAL_TIER2_RATE", value)
    # when settings read it (once, at start: tests/test_foundation.py runs manage.py with one),
    # then the error names the variable and the value
    with pytest.raises(ConfigError, match=re.escape(message)):
        referral_settings()


def test_a_rate_above_the_tier_below_is_refused(monkeypatch):
    monkeypatch.setenv("REFERRAL_TIER3_RATE", "0.06")
    with pytest.raises(
        ConfigError, match=re.escape("REFERRAL_TIER3_RATE=0.06 exceeds REFERRAL_TIER2_RATE")
    ):
        referral_settings()


def test_a_bad_batch_size_names_its_variable(monkeypatch):
    monkeypatch.setenv("REFERRAL_SETTLEMENT_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match=re.escape("REFERRAL_SETTLEMENT_BATCH_SIZE=0 is outside")):
        referral_settings()


def test_the_system_check_reports_a_webhook_channel_without_url(settings):
    from referrals.checks import referrals_settings_check

    settings.REFERRALS = replace(
        settings.REFERRALS, payout_channel="referrals.payouts.WebhookPayout", webhook_url=""
    )
    [error] = referrals_settings_check()
    assert error.id == "referrals.E002"
    assert "REFERRAL_PAYOUT_WEBHOOK_URL" in error.msg


def test_the_retired_settlement_time_variable_is_reported_not_silently_ignored(
    monkeypatch, settings
):
    from referrals.checks import referrals_settings_check

    # the settlement job's budget replaced it: an operator who still sets it is told
    monkeypatch.setenv("REFERRAL_SETTLEMENT_MAX_SECONDS", "540")
    settings.REFERRALS = referral_settings()  # as a process started with it reads it
    [warning] = referrals_settings_check()
    assert warning.id == "referrals.W001"
    assert "REFERRAL_SETTLEMENT_MAX_SECONDS is no longer read" in warning.msg


def test_the_defaults_pass_the_system_check():
    from referrals.checks import referrals_settings_check

    assert referrals_settings_check() == []
