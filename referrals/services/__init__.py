"""Referral services: every write of the referrals domain goes through these functions.

One module per purpose: the graph, rewards (tier 1 with the event, tiers 2-3 by jobs),
settlement (batched payouts into the ledger) and payout holds.
"""

from referrals.services.graph import ReferralError, referral_chain_ids, referral_create
from referrals.services.holds import payout_hold, payout_is_held, payout_release
from referrals.services.rewards import (
    referral_reward_create_tier1,
    referral_tier1_backfill,
    referral_tier2_create,
    referral_tier3_create,
    referral_tier_create,
    reward_amount,
)
from referrals.services.settlement import SettlementConflict, settlement_run

__all__ = [
    "ReferralError",
    "SettlementConflict",
    "payout_hold",
    "payout_is_held",
    "payout_release",
    "referral_chain_ids",
    "referral_create",
    "referral_reward_create_tier1",
    "referral_tier1_backfill",
    "referral_tier2_create",
    "referral_tier3_create",
    "referral_tier_create",
    "reward_amount",
    "settlement_run",
]
