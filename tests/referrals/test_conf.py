import re
from decimal import Decimal

import pytest

from jobsite.env import ConfigError
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
    # when the settings are read, then the error names the variable and the value
    with pytest.raises(ConfigError, match=re.escape(message)):
        conf.load()


def test_a_rate_above_the_tier_below_is_refused(monkeypatch):
    monkeypatch.setenv("REFERRAL_TIER3_RATE", "0.06")
    with pytest.raises(
        ConfigError, match=re.escape("REFERRAL_TIER3_RATE=0.06 exceeds REFERRAL_TIER2_RATE")
    ):
        conf.load()


def test_a_bad_batch_size_names_its_variable(monkeypatch):
    monkeypatch.setenv("REFERRAL_SETTLEMENT_BATCH_SIZE", "0")
    with pytest.raises(ConfigError, match=re.escape("REFERRAL_SETTLEMENT_BATCH_SIZE=0 is outside")):
        conf.load()


def test_the_system_check_reports_a_bad_rate(monkeypatch):
    from referrals.checks import referrals_settings_check

    monkeypatch.setenv("REFERRAL_TIER1_RATE", "0,10")
    [error] = referrals_settings_check()
    assert error.id == "referrals.E001"
    assert "REFERRAL_TIER1_RATE='0,10'" in error.msg


def test_the_system_check_reports_a_webhook_channel_without_url(monkeypatch):
    from referrals.checks import referrals_settings_check

    monkeypatch.setenv("REFERRAL_PAYOUT_CHANNEL", "referrals.payouts.WebhookPayout")
    monkeypatch.delenv("REFERRAL_PAYOUT_WEBHOOK_URL", raising=False)
    [error] = referrals_settings_check()
    assert error.id == "referrals.E002"
    assert "REFERRAL_PAYOUT_WEBHOOK_URL" in error.msg


def test_the_retired_settlement_time_variable_is_reported_not_silently_ignored(monkeypatch):
    from referrals.checks import referrals_settings_check

    # the settlement job's budget replaced it: an operator who still sets it is told
    monkeypatch.setenv("REFERRAL_SETTLEMENT_MAX_SECONDS", "540")
    [warning] = referrals_settings_check()
    assert warning.id == "referrals.W001"
    assert "REFERRAL_SETTLEMENT_MAX_SECONDS is no longer read" in warning.msg
