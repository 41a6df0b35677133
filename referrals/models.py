"""Referrals domain: the referral graph, rewards, settlement batches, payout holds and the ledger.

The database carries the invariants it can: one referrer per player and never oneself, one reward
per (event, tier), one settlement link per item with exactly one source, valid statuses and
state/timestamp pairs, positive money. Two invariants live in triggers of migration 0002, because
the ORM cannot declare them: the ledger is append-only, and each ledger transaction sums to zero
(checked at the end of every INSERT statement). What a constraint cannot see (no referral cycles
longer than one, settlement totals) is kept by the services and checked by the tests.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from core.permissions import HOLD_PAYOUT, meta_permissions
from games.models import GameSession, Player, PrizeCredit


def _money(**kwargs: object) -> models.DecimalField:
    return models.DecimalField(max_digits=12, decimal_places=2, **kwargs)  # type: ignore[arg-type]


class Referral(models.Model):
    """`referrer` brought `referee` in. Set once through `referral_create`; never changed."""

    referrer = models.ForeignKey(
        Player, on_delete=models.PROTECT, related_name="referrals_made", help_text="Tier 1 above."
    )
    referee = models.OneToOneField(
        Player,
        on_delete=models.PROTECT,
        related_name="referral",
        help_text="A player has at most one referrer.",
    )
    created_at = models.DateTimeField(
        help_text="The link counts for sessions finished at or after this moment."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(referrer=F("referee")), name="referral_not_self"),
        ]
        indexes = [models.Index(fields=["referrer", "created_at"], name="referral_referrer")]

    def __str__(self) -> str:
        return f"{self.referrer_id} referred {self.referee_id}"


class RewardStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SETTLED = "settled", "Settled"


class ReferralReward(models.Model):
    """What a referrer `tier` levels above the player earns from one finished paid session.

    `amount` = `base_amount` x `rate`, rounded half-even to 0.01 (see referrals.services.rewards).
    Rows with amount 0.00 are never created. A payout hold is a state of the player
    (`PayoutHold`), not of the reward: held rewards simply stay pending.
    """

    # No index of its own: the unique (session, tier) index leads with session_id and serves
    # every lookup by session (the foreign key checks and cleanup's reference guard too).
    session = models.ForeignKey(
        GameSession, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    tier = models.PositiveSmallIntegerField(help_text="1 = the player's referrer, 2 and 3 above.")
    beneficiary = models.ForeignKey(
        Player, on_delete=models.PROTECT, related_name="referral_rewards"
    )
    event_at = models.DateTimeField(help_text="When the session finished.")
    base_amount = _money(help_text="The session's entry fee.")
    rate = models.DecimalField(
        max_digits=5, decimal_places=4, help_text="The tier's rate when the reward was created."
    )
    amount = _money()
    status = models.CharField(
        max_length=10, choices=RewardStatus.choices, default=RewardStatus.PENDING
    )
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "tier"], name="reward_one_per_event_tier"),
            models.CheckConstraint(condition=Q(tier__gte=1, tier__lte=3), name="reward_tier_1_3"),
            models.CheckConstraint(
                condition=Q(amount__gt=0, amount__lte=F("base_amount")),
                name="reward_amount_within_fee",
            ),
            models.CheckConstraint(
                condition=Q(rate__gt=0, rate__lte=1), name="reward_rate_within_0_1"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RewardStatus.values), name="reward_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(status="settled", settled_at__isnull=False)
                | Q(status="pending", settled_at__isnull=True),
                name="reward_settled_at_iff_settled",
            ),
        ]
        indexes = [
            # Tier-2/3 creation walks tier-1 rewards by event time from its cursor.
            models.Index(fields=["event_at", "id"], condition=Q(tier=1), name="reward_tier1_event"),
            # Settlement claims pending rewards per beneficiary; the index shrinks as they settle.
            models.Index(
                fields=["beneficiary", "id"], condition=Q(status="pending"), name="reward_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"tier {self.tier} {self.amount} to {self.beneficiary_id} ({self.status})"


class TierProgress(models.Model):
    """How far tier-N creation has read tier-1 rewards (by event time); one row per tier."""

    tier = models.PositiveSmallIntegerField(primary_key=True)
    scanned_through = models.DateTimeField(
        help_text="Every tier-1 reward with event_at up to here (minus the lag) has been read."
    )

    class Meta:
        verbose_name_plural = "tier progress"

    def __str__(self) -> str:
        return f"tier {self.tier} through {self.scanned_through:%Y-%m-%d %H:%M:%S}"


class FailedItem(models.Model):
    """A row a referral job could not process, set aside so that it never blocks the others.

    Tier jobs record the tier-1 reward (the qualifying event) whose tier-N reward could not be
    written; settlement records the reward or prize credit whose settlement could not be opened.
    Each failed attempt counts, stores the cleaned error and moves `next_attempt_at` back
    (REFERRAL_ITEM_RETRY_SECONDS x 2**(attempts-1)); the job retries due rows after its healthy
    work, and from REFERRAL_ITEM_MAX_ATTEMPTS on the row is held for staff (`failed_items_retry`
    lets them try again). A success deletes the row (see referrals.services.failures).
    """

    class JobName(models.TextChoices):
        TIER2 = "referral-tier2", "referral-tier2"
        TIER3 = "referral-tier3", "referral-tier3"
        SETTLEMENT = "settlement", "settlement"

    job = models.CharField(max_length=20, choices=JobName.choices)
    # No indexes of their own: the unique constraints below lead with these columns.
    reward = models.ForeignKey(
        ReferralReward,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        help_text="Tier jobs: the tier-1 reward of the event. Settlement: the reward to pay.",
    )
    prize_credit = models.ForeignKey(
        PrizeCredit,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        help_text="Settlement: the prize credit to pay.",
    )
    attempts = models.PositiveIntegerField(help_text="Failed attempts since the last release.")
    error = models.TextField(help_text="The last attempt's error, cleaned and cut to 2,000 chars.")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(help_text="Not retried before this moment.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reward", "job"], name="failed_item_one_per_reward"),
            models.UniqueConstraint(
                fields=["prize_credit", "job"], name="failed_item_one_per_credit"
            ),
            models.CheckConstraint(
                condition=Q(reward__isnull=False, prize_credit__isnull=True)
                | Q(reward__isnull=True, prize_credit__isnull=False),
                name="failed_item_one_source",
            ),
            models.CheckConstraint(
                condition=Q(job__in=["referral-tier2", "referral-tier3", "settlement"]),
                name="failed_item_job_valid",
            ),
        ]
        indexes = [models.Index(fields=["job", "next_attempt_at"], name="failed_item_due")]

    def __str__(self) -> str:
        source = f"reward {self.reward_id}" if self.reward_id else f"credit {self.prize_credit_id}"
        return f"{self.job}: {source}, {self.attempts} failed attempts"


class SettlementStatus(models.TextChoices):
    SENDING = "sending", "Sending (items claimed; payout requested, outcome not recorded yet)"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed (items released to pending, retried with backoff)"


class Settlement(models.Model):
    """One player's payout within one settlement batch.

    Sending: its items are linked (claimed: no other settlement can take them) and the payout is
    being or was requested; the next settlement run re-sends it with the same `payout_key` until
    the channel's answer is known (`error` notes an unknown outcome). Paid: the ledger holds its
    transaction, the items are settled. Failed: the payout channel refused it; its item links
    were removed (the items are pending again) and `error` says why.
    """

    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="settlements")
    status = models.CharField(max_length=10, choices=SettlementStatus.choices)
    total = _money()
    item_count = models.PositiveIntegerField()
    channel = models.CharField(max_length=120, help_text="Payout channel class that was used.")
    payout_key = models.CharField(
        max_length=80,
        help_text="Idempotency key sent to the channel, derived from the settlement's id: "
        "every attempt sends the same one.",
    )
    wallet_address = models.CharField(
        max_length=120,
        blank=True,
        default="",
        db_default="",
        help_text="Where the payout was requested to; every attempt sends the same address.",
    )
    payout_reference = models.CharField(max_length=200, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(help_text="The settlement run's slot.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=SettlementStatus.values), name="settlement_status_valid"
            ),
            models.CheckConstraint(condition=Q(total__gt=0), name="settlement_total_positive"),
            models.CheckConstraint(
                condition=Q(status="paid", error="")
                | Q(status="failed") & ~Q(error="")
                | Q(status="sending"),
                name="settlement_error_iff_failed",
            ),
        ]
        indexes = [
            models.Index(fields=["player", "created_at"], name="settlement_player"),
            # Each settlement run first resumes the settlements still sending.
            models.Index(fields=["id"], condition=Q(status="sending"), name="settlement_sending"),
        ]

    def __str__(self) -> str:
        return f"settlement {self.pk}: {self.total} to {self.player_id} ({self.status})"


class SettlementItem(models.Model):
    """The unique settlement link of one reward or one prize credit: an item is paid once."""

    settlement = models.ForeignKey(Settlement, on_delete=models.PROTECT, related_name="items")
    reward = models.OneToOneField(
        ReferralReward,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="settlement_item",
    )
    prize_credit = models.OneToOneField(
        PrizeCredit,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="settlement_item",
    )
    amount = _money()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(reward__isnull=False, prize_credit__isnull=True)
                | Q(reward__isnull=True, prize_credit__isnull=False),
                name="settlement_item_one_source",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="settlement_item_positive"),
        ]

    def __str__(self) -> str:
        source = f"reward {self.reward_id}" if self.reward_id else f"credit {self.prize_credit_id}"
        return f"{source} in settlement {self.settlement_id}"


class PayoutRetry(models.Model):
    """Backoff state of a player whose last payout failed; deleted when a payout succeeds."""

    player = models.OneToOneField(Player, on_delete=models.CASCADE, related_name="payout_retry")
    failures = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField()

    class Meta:
        verbose_name = "payout retry"
        verbose_name_plural = "payout retries"

    def __str__(self) -> str:
        return f"{self.player_id}: {self.failures} failures, next {self.next_attempt_at}"


class PayoutHold(models.Model):
    """Staff stopped a player's payouts; the row is the audit record of the hold and its release."""

    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="payout_holds")
    reason = models.CharField(max_length=200)
    held_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    held_at = models.DateTimeField()
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["player"],
                condition=Q(released_at__isnull=True),
                name="payout_hold_one_active",
            ),
            models.CheckConstraint(
                condition=Q(released_at__isnull=True) | Q(released_at__gte=F("held_at")),
                name="payout_hold_release_after_hold",
            ),
        ]
        permissions = meta_permissions(HOLD_PAYOUT)

    def __str__(self) -> str:
        state = "active" if self.released_at is None else "released"
        return f"hold on {self.player_id} ({state})"


class Account(models.TextChoices):
    """Ledger accounts. Platform accounts have no player; a wallet belongs to one player."""

    REFERRAL_EXPENSE = "referral_expense", "Referral expense (platform)"
    PRIZE_POOL = "prize_pool", "Prize pools (platform)"
    PLAYER_WALLET = "player_wallet", "Player wallet"
    PAYOUT_EXTERNAL = "payout_external", "Paid out to external wallets"


class LedgerTransaction(models.Model):
    """One money movement: its entries sum to zero (enforced by a trigger, see migration 0002)."""

    class Kind(models.TextChoices):
        SETTLEMENT = "settlement", "Settlement"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    settlement = models.OneToOneField(
        Settlement,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transaction",
    )
    memo = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"txn {self.pk} ({self.kind})"


class LedgerEntry(models.Model):
    """One posting: `amount` is signed, + into the account, - out of it. Append-only.

    A player's balance is the sum of their wallet postings; it is never stored.
    """

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    account = models.CharField(max_length=20, choices=Account.choices)
    player = models.ForeignKey(
        Player, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    amount = _money()
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_entry_non_zero"),
            models.CheckConstraint(
                condition=Q(account__in=Account.values), name="ledger_entry_account_valid"
            ),
            models.CheckConstraint(
                condition=Q(account="player_wallet", player__isnull=False)
                | (~Q(account="player_wallet") & Q(player__isnull=True)),
                name="ledger_entry_player_iff_wallet",
            ),
        ]
        indexes = [
            models.Index(
                fields=["player", "id"],
                condition=Q(account="player_wallet"),
                name="ledger_wallet_by_player",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account} {self.player_id or ''} {self.amount:+}"


class ReferralPlayer(Player):
    """Admin view of a player from the referral side: tree, rewards, ledger, payout holds."""

    class Meta:
        proxy = True
        verbose_name = "player (referrals and payouts)"
        verbose_name_plural = "players (referrals and payouts)"
