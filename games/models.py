"""Games domain: players, sessions, boards, pools and what the game jobs need.

The database carries the invariants (one entry per board, one pool per period, one credit per pool,
non-negative money, valid statuses and state/timestamp combinations), so a bug in a service or a
raw SQL statement is refused at COMMIT instead of corrupting money. Services own every write.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import models
from django.db.models import F, Q

from core.permissions import REQUEUE_NOTIFICATION, VOID_SESSION, meta_permissions

# All-time boards need a period_start too so that one unique key covers every board.
ALL_TIME_START = dt.date(2000, 1, 1)


class Game(models.TextChoices):
    SNAKE = "snake", "Snake"
    TETRIS = "tetris", "Tetris"
    PONG = "pong", "Pong"
    BREAKOUT = "breakout", "Breakout"
    SPACE_INVADERS = "space_invaders", "Space Invaders"


class BoardPeriod(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    ALL_TIME = "all_time", "All time"


class PoolPeriod(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"


def _in(field: str, choices: type[models.TextChoices]) -> Q:
    return Q(**{f"{field}__in": choices.values})


def _money(**kwargs: object) -> models.DecimalField:
    return models.DecimalField(max_digits=12, decimal_places=2, **kwargs)  # type: ignore[arg-type]


class Player(models.Model):
    handle = models.CharField(max_length=40, unique=True, help_text="Public name, unique.")
    wallet_address = models.CharField(
        max_length=120, blank=True, default="", help_text="Where settlement pays this player."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.handle


class GameSession(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FINISHED = "finished", "Finished"
        EXPIRED = "expired", "Expired"

    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="sessions")
    game = models.CharField(max_length=20, choices=Game.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    entry_fee = _money(
        default=Decimal("0.00"), help_text="Paid at start; shared into the pools at finish."
    )
    score = models.BigIntegerField(default=0, help_text="Last reported or final score.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    last_score_at = models.DateTimeField(
        null=True, blank=True, help_text="When the game last reported a score."
    )
    voided_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set by staff through the void service: the session no longer counts on boards.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(entry_fee__gte=0), name="session_fee_non_negative"),
            models.CheckConstraint(condition=Q(score__gte=0), name="session_score_non_negative"),
            models.CheckConstraint(condition=_in("game", Game), name="session_game_valid"),
            models.CheckConstraint(
                condition=Q(status__in=["active", "finished", "expired"]),
                name="session_status_valid",
            ),
            # finished <=> finished_at set; a voided session must have finished first.
            models.CheckConstraint(
                condition=Q(status="finished", finished_at__isnull=False)
                | (~Q(status="finished") & Q(finished_at__isnull=True)),
                name="session_finished_at_iff_finished",
            ),
            models.CheckConstraint(
                condition=Q(voided_at__isnull=True) | Q(status="finished"),
                name="session_void_only_finished",
            ),
        ]
        indexes = [
            # Expiry and the stuck-session sweep read active sessions by age.
            # (started_at, id): cleanup walks these in keyset order, never over its own dead rows.
            models.Index(
                fields=["started_at", "id"], condition=Q(status="active"), name="session_active_key"
            ),
            # Cleanup deletes expired sessions without money by age.
            models.Index(
                fields=["started_at", "id"],
                condition=Q(status="expired", entry_fee=0),
                name="session_expired_free_key",
            ),
            models.Index(
                fields=["id"], condition=Q(voided_at__isnull=False), name="session_voided"
            ),
            # Live stats: sessions of today per game.
            models.Index(fields=["game", "started_at"], name="session_game_started"),
            models.Index(fields=["player", "game", "finished_at"], name="session_player_game"),
        ]
        permissions = meta_permissions(VOID_SESSION)

    def __str__(self) -> str:
        return f"{self.game} #{self.pk} ({self.status})"


class LeaderboardEntry(models.Model):
    """A player's best score on one board: (game, period, period_start)."""

    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="board_entries")
    game = models.CharField(max_length=20, choices=Game.choices)
    period = models.CharField(max_length=10, choices=BoardPeriod.choices)
    period_start = models.DateField(help_text="UTC date starting the period; weeks start Monday.")
    score = models.BigIntegerField()
    achieved_at = models.DateTimeField()
    session = models.ForeignKey(
        GameSession,
        on_delete=models.SET_NULL,  # also ON DELETE SET NULL in the database, see migrations
        null=True,
        blank=True,
        related_name="board_entries",
    )
    rank = models.PositiveIntegerField(
        null=True, blank=True, help_text="1..N within the board; written by leaderboard-ranking."
    )

    class Meta:
        verbose_name_plural = "leaderboard entries"
        constraints = [
            models.UniqueConstraint(
                fields=["player", "game", "period", "period_start"], name="entry_one_per_board"
            ),
            models.CheckConstraint(condition=_in("game", Game), name="entry_game_valid"),
            models.CheckConstraint(condition=_in("period", BoardPeriod), name="entry_period_valid"),
            models.CheckConstraint(condition=Q(score__gte=0), name="entry_score_non_negative"),
            models.CheckConstraint(
                condition=Q(rank__isnull=True) | Q(rank__gte=1), name="entry_rank_positive"
            ),
            models.CheckConstraint(
                condition=~Q(period="weekly") | Q(period_start__iso_week_day=1),
                name="entry_week_starts_monday",
            ),
            models.CheckConstraint(
                condition=~Q(period="all_time") | Q(period_start=ALL_TIME_START),
                name="entry_all_time_start",
            ),
        ]
        indexes = [
            # The rank order of a board: winner lookup is a 1-row index scan; ranking windows one
            # board at a time, read in this order or sorted (a board, not the table).
            models.Index(
                F("game"),
                F("period"),
                F("period_start"),
                F("score").desc(),
                F("achieved_at"),
                F("id"),
                name="entry_board_order",
            ),
            # (session, id): FK lookups, and cleanup's keyset walk over entries without a session.
            models.Index(fields=["session", "id"], name="entry_session_key"),
        ]

    def __str__(self) -> str:
        return f"{self.game}/{self.period}/{self.period_start}: {self.player_id} {self.score}"


class PrizePool(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        FINALISED = "finalised", "Finalised"
        NO_WINNER = "no_winner", "No winner (rolled over)"

    game = models.CharField(max_length=20, choices=Game.choices)
    period = models.CharField(max_length=10, choices=PoolPeriod.choices)
    period_start = models.DateField(help_text="UTC date starting the period; weeks start Monday.")
    amount = _money(default=Decimal("0.00"), help_text="Entry-fee shares plus carried amounts.")
    carried_in = _money(
        default=Decimal("0.00"), help_text="Part of the amount rolled over from earlier pools."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    winner = models.ForeignKey(
        Player, on_delete=models.PROTECT, null=True, blank=True, related_name="pools_won"
    )
    winning_score = models.BigIntegerField(null=True, blank=True)
    finalised_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["game", "period", "period_start"], name="pool_one_per_period"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="pool_amount_non_negative"),
            models.CheckConstraint(
                condition=Q(carried_in__gte=0) & Q(carried_in__lte=F("amount")),
                name="pool_carried_in_within_amount",
            ),
            models.CheckConstraint(condition=_in("game", Game), name="pool_game_valid"),
            models.CheckConstraint(condition=_in("period", PoolPeriod), name="pool_period_valid"),
            models.CheckConstraint(
                condition=~Q(period="weekly") | Q(period_start__iso_week_day=1),
                name="pool_week_starts_monday",
            ),
            models.CheckConstraint(
                condition=(
                    Q(status="open", winner__isnull=True, finalised_at__isnull=True)
                    | Q(
                        status="finalised",
                        winner__isnull=False,
                        winning_score__isnull=False,
                        finalised_at__isnull=False,
                    )
                    | Q(status="no_winner", winner__isnull=True, finalised_at__isnull=False)
                ),
                name="pool_status_consistent",
            ),
        ]
        indexes = [
            models.Index(
                fields=["period_start"], condition=Q(status="open"), name="pool_open_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.game} {self.period} {self.period_start} ({self.status})"


class PrizeCredit(models.Model):
    """What a pool's winner is owed; settlement (referrals app) pays it exactly once."""

    pool = models.OneToOneField(PrizePool, on_delete=models.PROTECT, related_name="credit")
    player = models.ForeignKey(Player, on_delete=models.PROTECT, related_name="prize_credits")
    amount = _money()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"credit {self.amount} to {self.player_id} for pool {self.pool_id}"


class Badge(models.Model):
    class Rule(models.TextChoices):
        GAMES_PLAYED = "games_played", "Finished at least `threshold` games"
        SCORE = "score", "Scored at least `threshold` in `game`"
        POOLS_WON = "pools_won", "Won at least `threshold` prize pools"

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=200, blank=True, default="")
    rule = models.CharField(max_length=20, choices=Rule.choices)
    game = models.CharField(
        max_length=20, choices=Game.choices, blank=True, default="", help_text="Score rules only."
    )
    threshold = models.PositiveIntegerField(default=1)
    active = models.BooleanField(default=True, help_text="Inactive badges are not awarded.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(rule__in=["games_played", "score", "pools_won"]),
                name="badge_rule_valid",
            ),
            models.CheckConstraint(
                condition=(Q(rule="score") & ~Q(game="")) | (~Q(rule="score") & Q(game="")),
                name="badge_game_iff_score_rule",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PlayerBadge(models.Model):
    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="badges")
    badge = models.ForeignKey(Badge, on_delete=models.PROTECT, related_name="awards")
    awarded_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["player", "badge"], name="badge_once_per_player"),
        ]

    def __str__(self) -> str:
        return f"{self.badge_id} for {self.player_id}"


class Notification(models.Model):
    """Outbox row: written in the transaction of the event, delivered by scheduled-notifications."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (attempts exhausted; requeue from the admin)"

    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    dedupe_key = models.CharField(
        max_length=120,
        unique=True,
        null=True,
        blank=True,
        help_text="One notification per event (e.g. 'pool-won:42'); reruns do not repeat it.",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    due_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(help_text="Not tried before this moment (backoff).")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivered", "failed"]),
                name="notification_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="delivered", delivered_at__isnull=False)
                | (~Q(status="delivered") & Q(delivered_at__isnull=True)),
                name="notification_delivered_at_iff_delivered",
            ),
        ]
        indexes = [
            # Delivery's order, (next_attempt_at, id): a batch is the first rows of this index.
            # Without id here, rows due at one moment (one badge run queues thousands) were
            # sorted in full for every batch of 200.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(status="pending"),
                name="notification_pending_key",
            ),
        ]
        permissions = meta_permissions(REQUEUE_NOTIFICATION)

    def __str__(self) -> str:
        return f"{self.kind} to {self.player_id} ({self.status})"


class InboxMessage(models.Model):
    """The in-app inbox: the default notification channel writes here, once per notification."""

    notification = models.OneToOneField(
        Notification, on_delete=models.CASCADE, related_name="inbox_message"
    )
    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="inbox")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    read_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title


class Prediction(models.Model):
    """A player's guess of who wins a pool; settled once the pool is closed."""

    class Outcome(models.TextChoices):
        PENDING = "pending", "Pending"
        CORRECT = "correct", "Correct"
        WRONG = "wrong", "Wrong"
        VOID = "void", "Void (pool had no winner)"

    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="predictions")
    pool = models.ForeignKey(PrizePool, on_delete=models.PROTECT, related_name="predictions")
    predicted_winner = models.ForeignKey(
        Player, on_delete=models.PROTECT, related_name="predicted_wins"
    )
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    points = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["player", "pool"], name="prediction_one_per_pool"),
            models.CheckConstraint(
                condition=Q(outcome__in=["pending", "correct", "wrong", "void"]),
                name="prediction_outcome_valid",
            ),
            models.CheckConstraint(
                condition=Q(outcome="pending", settled_at__isnull=True)
                | (~Q(outcome="pending") & Q(settled_at__isnull=False)),
                name="prediction_settled_at_iff_settled",
            ),
        ]
        indexes = [
            models.Index(
                fields=["pool"], condition=Q(outcome="pending"), name="prediction_pending"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.player_id} predicts {self.predicted_winner_id} for pool {self.pool_id}"


class LiveStatsSnapshot(models.Model):
    """Per-game figures at one minute, for the admin and the API."""

    game = models.CharField(max_length=20, choices=Game.choices)
    taken_at = models.DateTimeField(help_text="The run's slot.")
    active_sessions = models.PositiveIntegerField()
    players_today = models.PositiveIntegerField()
    sessions_today = models.PositiveIntegerField()
    top_score_today = models.BigIntegerField(null=True, blank=True)
    open_daily_pool = _money()
    open_weekly_pool = _money()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["game", "taken_at"], name="live_stats_one_per_slot"),
        ]
        indexes = [models.Index(fields=["taken_at"], name="live_stats_taken_at")]

    def __str__(self) -> str:
        return f"{self.game} at {self.taken_at:%Y-%m-%d %H:%M}"


class RowFailure(models.Model):
    """A row a games batch job could not process: its error and how often it failed.

    Jobs try such rows after their healthy work and leave them alone at GAMES_ROW_MAX_ATTEMPTS
    (staff fix the cause, then delete this record to let the job try again; prize pools are
    retried every run, without a limit). A success deletes the record. Notifications keep their
    own attempts and error on the row instead. See docs/jobs.md.
    """

    job = models.CharField(max_length=40, help_text="The job that failed, e.g. 'cleanup'.")
    row_id = models.BigIntegerField(
        help_text="The row in the job's own table: a session (stuck-session-finisher, cleanup), "
        "a badge (badge-auto-unlock), a pool (prediction-matcher, prize-pool-finalisation)."
    )
    attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts so far.")
    last_error = models.TextField(blank=True, default="")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "row_id"], name="row_failure_one_per_row"),
        ]

    def __str__(self) -> str:
        return f"{self.job} row {self.row_id}: {self.attempts} failed attempts"
