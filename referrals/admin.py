"""Admin: the referral graph, rewards by status, settlements with their items, the ledger with
running balances, and payout holds. Money rows are read-only here: a settled reward, a
settlement or a ledger entry is history, and the ledger is append-only in the database too. The
only writes are through services: creating a referral (graph rules) and holding or releasing a
player's payouts (recorded on the hold row and in the admin log)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdmin
from core.permissions import HOLD_PAYOUT
from referrals.models import (
    FailedItem,
    LedgerEntry,
    LedgerTransaction,
    PayoutHold,
    PayoutRetry,
    Referral,
    ReferralPlayer,
    ReferralReward,
    Settlement,
    SettlementItem,
)
from referrals.selectors import player_balance, player_ledger, referral_descendants
from referrals.services import (
    ReferralError,
    payout_hold,
    payout_is_held,
    payout_release,
    referral_chain_ids,
    referral_create,
)
from referrals.services.failures import failed_items_retry


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReferralForm(forms.ModelForm):
    class Meta:
        model = Referral
        fields = ["referrer", "referee"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        referrer, referee = data.get("referrer"), data.get("referee")
        if referrer is not None and referee is not None:
            # The full rules (cycles under concurrency) run again in the service at save.
            if referrer == referee:
                raise forms.ValidationError("A player cannot refer themselves.")
            if referee.pk in referral_chain_ids(player_id=referrer.pk):
                raise forms.ValidationError(
                    f"{referee} is already above {referrer} in the referral chain: "
                    "this referral would make a cycle."
                )
        return data


@admin.register(Referral)
class ReferralAdmin(admin.ModelAdmin):
    form = ReferralForm
    list_display = ["referee", "referrer", "created_at"]
    search_fields = ["referee__handle", "referrer__handle"]
    raw_id_fields = ["referrer", "referee"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)  # set once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Referral, form: Any, change: bool) -> None:
        try:
            created = referral_create(referrer_id=obj.referrer_id, referee_id=obj.referee_id)
        except ReferralError as exc:
            # Lost a race with another edit after the form was validated.
            self.message_user(request, str(exc), messages.ERROR)
            raise
        obj.pk, obj.created_at = created.pk, created.created_at


@admin.register(ReferralReward)
class ReferralRewardAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "tier",
        "beneficiary",
        "session",
        "base_amount",
        "rate",
        "amount",
        "status",
        "event_at",
        "settled_at",
    ]
    list_filter = ["status", "tier"]
    search_fields = ["beneficiary__handle"]
    list_select_related = ["beneficiary", "session"]
    date_hierarchy = "event_at"


class SettlementItemInline(ReadOnlyInline):
    model = SettlementItem
    fields = ["reward", "prize_credit", "amount"]
    readonly_fields = fields


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "player",
        "status",
        "total",
        "item_count",
        "channel",
        "payout_reference",
        "created_at",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["player__handle", "payout_reference", "payout_key"]
    list_select_related = ["player"]
    date_hierarchy = "created_at"
    inlines = [SettlementItemInline]


class LedgerEntryInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ["account", "player", "amount", "created_at"]
    readonly_fields = fields


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "settlement", "memo", "created_at"]
    list_filter = ["kind"]
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "account", "player", "amount", "created_at"]
    list_filter = ["account"]
    search_fields = ["player__handle"]
    list_select_related = ["player"]


@admin.register(PayoutRetry)
class PayoutRetryAdmin(ReadOnlyAdmin):
    list_display = ["player", "failures", "next_attempt_at", "last_error"]
    search_fields = ["player__handle"]


@admin.register(PayoutHold)
class PayoutHoldAdmin(ReadOnlyAdmin):
    list_display = ["player", "reason", "held_by", "held_at", "released_by", "released_at"]
    list_filter = [("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["player__handle", "reason"]
    actions = ["release"]

    def has_hold_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(HOLD_PAYOUT)

    @admin.action(description="Release the selected holds", permissions=["hold"])
    def release(self, request: HttpRequest, queryset: QuerySet[PayoutHold]) -> None:
        for hold in queryset.filter(released_at__isnull=True):
            payout_release(player_id=hold.player_id, user_id=request.user.pk)
            self.log_change(request, hold, "Released payout hold")
        self.message_user(request, "Released.")


@admin.register(FailedItem)
class FailedItemAdmin(ReadOnlyAdmin):
    """Rows the referral jobs set aside; held ones (at the attempt limit) wait for staff."""

    list_display = ["job", "reward", "prize_credit", "attempts", "next_attempt_at", "error"]
    list_filter = ["job"]
    actions = ["retry"]

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("referrals.change_faileditem")

    @admin.action(
        description="Retry the selected items (a fresh set of attempts)", permissions=["retry"]
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[FailedItem]) -> None:
        items = list(queryset)
        failed_items_retry(ids=[item.pk for item in items], now=timezone.now())
        for item in items:
            self.log_change(request, item, "Released for a fresh set of attempts")
        self.message_user(request, f"{len(items)} items will be retried by their job's next run.")


def _table(headers: list[str], rows: list[tuple[Any, ...]]) -> str:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


@admin.register(ReferralPlayer)
class ReferralPlayerAdmin(ReadOnlyAdmin):
    """A player from the referral side: who is above, the tree below, the wallet ledger."""

    list_display = ["handle", "referrer", "balance", "held"]
    search_fields = ["handle"]
    fields = ["handle", "referrer_chain", "tree", "balance", "held", "ledger"]
    readonly_fields = fields
    actions = ["hold_payouts", "release_payouts"]

    @admin.display(description="referrer")
    def referrer(self, obj: ReferralPlayer) -> str:
        referral = Referral.objects.filter(referee_id=obj.pk).select_related("referrer").first()
        return str(referral.referrer) if referral else "-"

    @admin.display(description="wallet balance")
    def balance(self, obj: ReferralPlayer) -> Any:
        return player_balance(player_id=obj.pk)

    @admin.display(description="payouts held", boolean=True)
    def held(self, obj: ReferralPlayer) -> bool:
        return payout_is_held(player_id=obj.pk)

    @admin.display(description="referrers above (tiers 1, 2, 3, ...)")
    def referrer_chain(self, obj: ReferralPlayer) -> str:
        above = referral_chain_ids(player_id=obj.pk, depth=10)[1:]
        handles = dict(ReferralPlayer.objects.filter(pk__in=above).values_list("pk", "handle"))
        return " -> ".join(handles[p] for p in above) or "-"

    @admin.display(description="referral tree (the three tiers this player earns from)")
    def tree(self, obj: ReferralPlayer) -> str:
        nodes = referral_descendants(player_id=obj.pk, depth=3)
        return _table(
            ["tier", "player", "referred by"], [(n.depth, n.handle, n.parent_id) for n in nodes]
        )

    @admin.display(description="wallet ledger (newest first, running balance)")
    def ledger(self, obj: ReferralPlayer) -> str:
        lines = player_ledger(player_id=obj.pk)
        return _table(
            ["when", "transaction", "amount", "balance", "memo"],
            [(ln.created_at, ln.transaction_id, ln.amount, ln.balance, ln.memo) for ln in lines],
        )

    def has_hold_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(HOLD_PAYOUT)

    @admin.action(description="Hold payouts of the selected players", permissions=["hold"])
    def hold_payouts(self, request: HttpRequest, queryset: QuerySet[ReferralPlayer]) -> None:
        for player in queryset:
            payout_hold(
                player_id=player.pk,
                reason=f"held from the admin by {request.user}",
                user_id=request.user.pk,
            )
            self.log_change(request, player, "Held payouts")
        self.message_user(request, f"Payouts held for {queryset.count()} players.")

    @admin.action(description="Release payouts of the selected players", permissions=["hold"])
    def release_payouts(self, request: HttpRequest, queryset: QuerySet[ReferralPlayer]) -> None:
        for player in queryset:
            if payout_release(player_id=player.pk, user_id=request.user.pk):
                self.log_change(request, player, "Released payouts")
        self.message_user(request, "Released.")
