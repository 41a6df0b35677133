"""Admin for the games domain: browse everything; edit only what cannot break an invariant.

Money and results (pools, credits, board entries, sessions' outcomes) are written by services
only, so their admins are read-only; staff act through actions that call those services
(void a session, requeue a failed notification).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from core.admin import ReadOnlyAdmin
from core.permissions import REQUEUE_NOTIFICATION, VOID_SESSION
from games.models import (
    Badge,
    GameSession,
    InboxMessage,
    LeaderboardEntry,
    LiveStatsSnapshot,
    Notification,
    Player,
    PlayerBadge,
    Prediction,
    PrizeCredit,
    PrizePool,
    RowFailure,
)
from games.services import SessionStateError, game_session_void


@admin.register(Player)
class PlayerAdmin(admin.ModelAdmin):
    list_display = ("handle", "wallet_address", "created_at")
    search_fields = ("handle", "wallet_address")
    readonly_fields = ("created_at",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # sessions, pools and credits point at players


@admin.register(GameSession)
class GameSessionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "player",
        "game",
        "status",
        "entry_fee",
        "score",
        "started_at",
        "finished_at",
        "voided_at",
    )
    list_filter = ("game", "status", ("voided_at", admin.EmptyFieldListFilter))
    search_fields = ("=id", "player__handle")
    date_hierarchy = "started_at"
    list_select_related = ("player",)
    show_full_result_count = False  # count(*) over millions of sessions is slow
    actions = ("void_sessions",)

    @admin.action(
        description="Void selected finished sessions (removes them from boards)",
        permissions=["void"],
    )
    def void_sessions(self, request: HttpRequest, queryset: QuerySet[GameSession]) -> None:
        voided = 0
        for session_id in queryset.values_list("id", flat=True):
            try:
                game_session_void(session_id=session_id, now=timezone.now())
                voided += 1
            except SessionStateError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"{voided} session(s) voided.", messages.SUCCESS)

    def has_void_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VOID_SESSION)


@admin.register(LeaderboardEntry)
class LeaderboardEntryAdmin(ReadOnlyAdmin):
    list_display = ("game", "period", "period_start", "rank", "player", "score", "achieved_at")
    list_filter = ("game", "period", "period_start")
    search_fields = ("player__handle",)
    ordering = ("game", "period", "-period_start", "rank")
    list_select_related = ("player",)
    show_full_result_count = False


class PrizeCreditInline(admin.StackedInline):
    model = PrizeCredit
    can_delete = False
    extra = 0
    readonly_fields = ("player", "amount", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PrizePool)
class PrizePoolAdmin(ReadOnlyAdmin):
    list_display = (
        "game",
        "period",
        "period_start",
        "status",
        "amount",
        "carried_in",
        "winner",
        "winning_score",
        "finalised_at",
    )
    list_filter = ("status", "game", "period")
    search_fields = ("winner__handle",)
    date_hierarchy = "period_start"
    ordering = ("-period_start", "game", "period")
    inlines = (PrizeCreditInline,)


@admin.register(PrizeCredit)
class PrizeCreditAdmin(ReadOnlyAdmin):
    list_display = ("id", "pool", "player", "amount", "created_at")
    list_filter = ("pool__game", "pool__period")
    search_fields = ("player__handle",)
    list_select_related = ("pool", "player")


@admin.register(Badge)
class BadgeAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "rule", "game", "threshold", "active")
    list_filter = ("rule", "game", "active")
    search_fields = ("code", "name")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deactivate instead: awards point at badges


@admin.register(PlayerBadge)
class PlayerBadgeAdmin(ReadOnlyAdmin):
    list_display = ("player", "badge", "awarded_at")
    list_filter = ("badge",)
    search_fields = ("player__handle",)
    list_select_related = ("player", "badge")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "player",
        "kind",
        "title",
        "status",
        "due_at",
        "attempts",
        "delivered_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("player__handle", "title", "dedupe_key")
    list_select_related = ("player",)
    actions = ("requeue",)

    @admin.action(description="Requeue failed notifications now", permissions=["requeue"])
    def requeue(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        count = queryset.filter(status=Notification.Status.FAILED).update(
            status=Notification.Status.PENDING, next_attempt_at=timezone.now()
        )
        self.message_user(request, f"{count} notification(s) requeued.", messages.SUCCESS)

    def has_requeue_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(REQUEUE_NOTIFICATION)


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("player", "title", "created_at", "read_at")
    search_fields = ("player__handle", "title")
    list_select_related = ("player",)


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("player", "pool", "predicted_winner", "outcome", "points", "settled_at")
    list_filter = ("outcome", "pool__game")
    search_fields = ("player__handle", "predicted_winner__handle")
    list_select_related = ("player", "pool", "predicted_winner")


@admin.register(LiveStatsSnapshot)
class LiveStatsSnapshotAdmin(ReadOnlyAdmin):
    list_display = (
        "taken_at",
        "game",
        "active_sessions",
        "players_today",
        "sessions_today",
        "top_score_today",
        "open_daily_pool",
        "open_weekly_pool",
    )
    list_filter = ("game",)
    date_hierarchy = "taken_at"
    ordering = ("-taken_at", "game")


@admin.register(RowFailure)
class RowFailureAdmin(ReadOnlyAdmin):
    """Rows a batch job failed on. Deleting a record (model permission `delete_rowfailure`)
    lets the job try a parked row again, after staff fixed its cause."""

    list_display = ("job", "row_id", "attempts", "last_failed_at", "first_failed_at")
    list_filter = ("job",)
    search_fields = ("last_error",)
    readonly_fields = (
        "job",
        "row_id",
        "attempts",
        "last_error",
        "first_failed_at",
        "last_failed_at",
    )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super(ReadOnlyAdmin, self).has_delete_permission(request, obj)
