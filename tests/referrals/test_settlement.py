import datetime as dt
import hashlib
import hmac
import json
from dataclasses import replace
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from games.models import Notification
from referrals.models import (
    Account,
    FailedItem,
    LedgerEntry,
    LedgerTransaction,
    PayoutRetry,
    ReferralReward,
    Settlement,
    SettlementItem,
)
from referrals.payouts import PayoutError, WalletPayout, WebhookPayout
from referrals.selectors import player_balance, player_ledger
from referrals.services import (
    payout_hold,
    payout_release,
    referral_tier2_create,
    referral_tier3_create,
    settlement_run,
)
from referrals.services.failures import failed_items_retry, raise_unless_row_fault
from scheduler.errors import RUN_INTERRUPTS
from tests.referrals.conftest import (
    StopAfter,
    at,
    fail_writes,
    run_concurrently,
    stop_failing_writes,
)

NOW = at(2026, 3, 4, 12, 0, 40)


@pytest.fixture
def earnings(chain, play):
    """A chain top -> mid -> bottom; bottom plays twice at 10.00: mid earns 2.00, top 1.00."""
    top, mid, bottom = chain(3)
    play(bottom, fee="10.00", when=at(2026, 3, 4, 10))
    play(bottom, fee="10.00", when=at(2026, 3, 4, 11))
    referral_tier2_create(now=NOW)
    return top, mid, bottom


@pytest.mark.django_db
def test_settlement_pays_rewards_and_prize_credits_into_the_wallets(earnings, make_credit):
    top, mid, _bottom = earnings
    make_credit(top, "25.00")
    # when settlement runs
    counts = settlement_run(now=NOW)
    # then each player got one settlement with all their items, paid into the wallet
    assert counts == {
        "batches": 1,
        "settled_items": 5,
        "paid_settlements": 2,
        "failed_settlements": 0,
        "unknown_settlements": 0,
        "resumed_settlements": 0,
        "unrecorded_settlements": 0,
        "set_aside_items": 0,
        "retried_items": 0,
        "paid_cents": 2800,
        "backlog": 0,
    }
    assert player_balance(player_id=top.pk) == Decimal("26.00")
    assert player_balance(player_id=mid.pk) == Decimal("2.00")
    assert not ReferralReward.objects.filter(status="pending").exists()
    top_settlement = Settlement.objects.get(player=top)
    assert (top_settlement.status, top_settlement.total, top_settlement.item_count) == (
        "paid",
        Decimal("26.00"),
        3,
    )
    # and the ledger moved the money out of the expense and prize-pool accounts
    lines = LedgerEntry.objects.filter(transaction__settlement=top_settlement)
    assert sorted((e.account, e.amount) for e in lines) == [
        (Account.PLAYER_WALLET, Decimal("26.00")),
        (Account.PRIZE_POOL, Decimal("-25.00")),
        (Account.REFERRAL_EXPENSE, Decimal("-1.00")),
    ]
    # and each player has a notification queued
    assert Notification.objects.filter(kind="payout_paid").count() == 2


@pytest.mark.django_db
def test_settling_twice_pays_once(earnings, make_credit):
    top, _mid, _bottom = earnings
    make_credit(top, "5.00")
    settlement_run(now=NOW)
    again = settlement_run(now=NOW)
    assert (again["settled_items"], again["batches"]) == (0, 0)
    assert Settlement.objects.count() == 2
    assert player_balance(player_id=top.pk) == Decimal("6.00")


@pytest.mark.django_db
def test_new_rewards_after_a_settlement_are_paid_by_the_next_one(earnings, play):
    top, mid, bottom = earnings
    settlement_run(now=NOW)
    play(bottom, fee="1.00", when=at(2026, 3, 4, 12, 5))
    referral_tier2_create(now=at(2026, 3, 4, 12, 6))
    settlement_run(now=at(2026, 3, 4, 12, 10, 40))
    assert player_balance(player_id=mid.pk) == Decimal("2.10")
    assert player_balance(player_id=top.pk) == Decimal("1.05")
    [latest, *_] = player_ledger(player_id=mid.pk)
    assert (latest.amount, latest.balance) == (Decimal("0.10"), Decimal("2.10"))


@pytest.mark.django_db
def test_batches_are_bounded_and_a_player_may_span_two(earnings, settings):
    settings.REFERRALS = replace(settings.REFERRALS, settlement_batch_size=3)
    top, mid, _ = earnings
    counts = settlement_run(now=NOW)
    # 4 rewards: 3 in the first batch, 1 in the second
    assert (counts["batches"], counts["settled_items"]) == (2, 4)
    assert player_balance(player_id=top.pk) + player_balance(player_id=mid.pk) == Decimal("3.00")


@pytest.mark.django_db
def test_held_payouts_wait_until_released(earnings, make_credit, admin_user):
    top, mid, _ = earnings
    make_credit(top, "7.00")
    # given staff held top's payouts
    hold = payout_hold(player_id=top.pk, reason="fraud review", user_id=admin_user.pk, now=NOW)
    assert payout_hold(player_id=top.pk, reason="again", now=NOW) == hold  # idempotent
    # when settlement runs, only mid is paid
    settlement_run(now=NOW)
    assert player_balance(player_id=top.pk) == Decimal("0")
    assert player_balance(player_id=mid.pk) == Decimal("2.00")
    assert ReferralReward.objects.filter(beneficiary=top, status="pending").count() == 2
    # when the hold is released, the next run pays top everything
    assert payout_release(player_id=top.pk, user_id=admin_user.pk, now=NOW)
    assert not payout_release(player_id=top.pk, now=NOW)
    settlement_run(now=NOW + dt.timedelta(minutes=10))
    assert player_balance(player_id=top.pk) == Decimal("8.00")
    hold.refresh_from_db()
    assert (hold.held_by, hold.released_by, hold.released_at) == (admin_user, admin_user, NOW)


class FlakyChannel(WalletPayout):
    """Refuses one player, pays everyone else into the wallet."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse

    def pay(self, payout, *, now):
        if payout.player_id == self.refuse:
            raise PayoutError("account frozen at the provider")
        return super().pay(payout, now=now)


@pytest.mark.django_db
def test_one_failing_payout_does_not_block_the_others_and_is_retried_with_backoff(earnings):
    top, _mid, _ = earnings
    # when top's payout fails
    counts = settlement_run(now=NOW, channel=FlakyChannel(refuse=top.pk))
    # then mid is paid, top's items stay pending, the failure is recorded with its error
    assert (counts["paid_settlements"], counts["failed_settlements"]) == (1, 1)
    failed = Settlement.objects.get(player=top)
    assert (failed.status, failed.total) == ("failed", Decimal("1.00"))
    assert failed.error == "PayoutError: account frozen at the provider"
    assert not failed.items.exists()
    assert ReferralReward.objects.filter(beneficiary=top, status="pending").count() == 2
    retry = PayoutRetry.objects.get(player=top)
    # the wait is 600 s with +-20 % jitter
    assert retry.failures == 1
    assert 480 <= (retry.next_attempt_at - NOW).total_seconds() < 720
    # when it fails again after the backoff, the wait doubles
    before_backoff = settlement_run(
        now=retry.next_attempt_at - dt.timedelta(seconds=1), channel=FlakyChannel(top.pk)
    )
    assert before_backoff["failed_settlements"] == 0  # not even tried yet
    second_try = retry.next_attempt_at
    settlement_run(now=second_try, channel=FlakyChannel(refuse=top.pk))
    retry.refresh_from_db()
    assert retry.failures == 2
    assert 960 <= (retry.next_attempt_at - second_try).total_seconds() < 1440
    # when the channel recovers, top is paid once and the backoff is cleared
    settlement_run(now=retry.next_attempt_at, channel=WalletPayout())
    assert player_balance(player_id=top.pk) == Decimal("1.00")
    assert not PayoutRetry.objects.exists()


@pytest.mark.django_db
def test_webhook_channel_pays_through_a_real_http_service(earnings, payout_service, settings):
    _top, mid, _ = earnings
    settings.REFERRALS = replace(
        settings.REFERRALS,
        payout_channel="referrals.payouts.WebhookPayout",
        webhook_url=payout_service.url,
        webhook_secret="s3cret",
    )
    # when settlement runs with the webhook channel
    settlement_run(now=NOW)
    # then the service got one signed request per player with the items as idempotency data
    assert len(payout_service.requests) == 2
    headers, body = payout_service.requests[0]
    request = json.loads(body)
    assert headers["x-signature-sha256"] == hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["idempotency-key"] == request["idempotency_key"]
    assert request["amount"] in ("1.00", "2.00")
    assert all(item.startswith("reward:") for item in request["items"])
    # and the money passed through the wallet to the external account
    assert player_balance(player_id=mid.pk) == Decimal("0")
    assert Settlement.objects.get(player=mid).payout_reference.startswith("ext-")
    external = LedgerEntry.objects.filter(account=Account.PAYOUT_EXTERNAL)
    assert sum(e.amount for e in external) == Decimal("3.00")


@pytest.mark.django_db
def test_a_failing_payout_service_leaves_items_pending_with_the_error(earnings, payout_service):
    _top, _mid, _ = earnings
    payout_service.status = 503
    channel = WebhookPayout(url=payout_service.url, secret="", timeout=5)
    counts = settlement_run(now=NOW, channel=channel)
    assert (counts["paid_settlements"], counts["failed_settlements"]) == (0, 2)
    assert set(Settlement.objects.values_list("error", flat=True)) == {
        "PayoutError: payout service answered HTTP 503: payout provider is down"
    }
    assert not ReferralReward.objects.filter(status="settled").exists()
    assert not LedgerTransaction.objects.exists()
    # the service recovers; after the backoff both are paid, once
    payout_service.status = 200
    later = max(PayoutRetry.objects.values_list("next_attempt_at", flat=True))
    settlement_run(now=later, channel=channel)
    assert not ReferralReward.objects.filter(status="pending").exists()
    assert Settlement.objects.filter(status="paid").count() == 2


@pytest.mark.django_db
def test_an_unreachable_payout_service_is_a_recorded_failure(earnings):
    channel = WebhookPayout(url="http://127.0.0.1:9/unreachable", timeout=2)
    counts = settlement_run(now=NOW, channel=channel)
    assert counts["failed_settlements"] == 2
    assert all("unreachable" in s.error for s in Settlement.objects.all())


@pytest.mark.django_db
def test_the_database_refuses_a_second_link_to_the_same_item(earnings):
    settlement_run(now=NOW)
    item = SettlementItem.objects.filter(reward__isnull=False).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        SettlementItem.objects.create(
            settlement=item.settlement, reward=item.reward, amount=item.amount
        )


@pytest.mark.django_db
def test_the_database_refuses_an_unbalanced_or_edited_ledger(earnings):
    settlement_run(now=NOW)
    txn = LedgerTransaction.objects.create(kind="settlement", created_at=NOW)
    with pytest.raises(IntegrityError, match="does not sum to zero"), transaction.atomic():
        LedgerEntry.objects.create(
            transaction=txn, account=Account.REFERRAL_EXPENSE, amount="-1.00", created_at=NOW
        )
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.update(amount=Decimal("1.00"))
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.all().delete()
    # a balanced movement written in one statement is accepted (here: a manual withdrawal)
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                transaction=txn,
                account=Account.PLAYER_WALLET,
                player=earnings[0],
                amount="-1.00",
                created_at=NOW,
            ),
            LedgerEntry(
                transaction=txn, account=Account.PAYOUT_EXTERNAL, amount="1.00", created_at=NOW
            ),
        ]
    )


@pytest.mark.django_db(transaction=True)
def test_two_settlers_at_once_pay_each_item_once(chain, play, make_credit, settings):
    # given 40 events under a chain of 4 (120 rewards for 3 players) and 10 prize credits
    settings.REFERRALS = replace(settings.REFERRALS, settlement_batch_size=7)
    players = chain(4)
    for minute in range(40):
        play(players[-1], fee="1.37", when=at(2026, 3, 4, 10, minute))
    referral_tier2_create(now=NOW)
    referral_tier3_create(now=NOW)
    for index in range(10):
        make_credit(players[index % 4], "3.33")
    # when two workers settle at the same moment (small batches, so they interleave)
    results = run_concurrently(lambda: settlement_run(now=NOW), lambda: settlement_run(now=NOW))
    # then nothing failed, and together they settled every item exactly once
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r["settled_items"] for r in results) == 130
    assert SettlementItem.objects.count() == 130
    paid = sum(player_balance(player_id=p.pk) for p in players)
    expected = sum(r.amount for r in ReferralReward.objects.all()) + Decimal("33.30")
    assert paid == expected


@pytest.mark.django_db
def test_a_settlement_that_cannot_be_opened_sets_its_items_aside_and_the_rest_is_paid(
    make_player, make_credit, chain, play
):
    # given, first in line, a player whose two prizes together overflow a settlement's total
    whale = make_player()
    big = [make_credit(whale, "6000000000.00"), make_credit(whale, "6000000000.00")]
    top, mid, bottom = chain(3)
    play(bottom, fee="10.00", when=at(2026, 3, 4, 10))
    referral_tier2_create(now=NOW)
    # when settlement runs
    counts = settlement_run(now=NOW)
    # then it returns normally: the others are paid, the whale's items are set aside with the error
    assert (counts["paid_settlements"], counts["set_aside_items"], counts["backlog"]) == (2, 2, 0)
    assert (player_balance(player_id=top.pk), player_balance(player_id=mid.pk)) == (
        Decimal("0.50"),
        Decimal("1.00"),
    )
    failures = FailedItem.objects.order_by("prize_credit_id")
    assert [(f.job, f.prize_credit_id, f.attempts) for f in failures] == [
        ("settlement", credit.pk, 1) for credit in big
    ]
    assert all(f.error.startswith("DataError: numeric field overflow") for f in failures)
    # when the next run comes before their backoff ends, it is not stuck on them
    again = settlement_run(now=NOW + dt.timedelta(minutes=1))
    assert (again["batches"], again["set_aside_items"], again["retried_items"]) == (0, 0, 0)
    # when their backoff has ended, each is retried in a settlement of its own and paid once
    later = settlement_run(now=NOW + dt.timedelta(minutes=10))
    assert (later["retried_items"], later["paid_settlements"]) == (2, 2)
    assert player_balance(player_id=whale.pk) == Decimal("12000000000.00")
    assert not FailedItem.objects.exists()
    assert settlement_run(now=NOW + dt.timedelta(minutes=20))["settled_items"] == 0


@pytest.mark.django_db
def test_one_unpayable_item_is_held_after_its_limit_and_its_healthy_neighbours_are_paid(
    earnings, make_credit, settings
):
    # given top's prize credit cannot be linked to any settlement (a row that breaks a rule)
    settings.REFERRALS = replace(settings.REFERRALS, item_max_attempts=2)
    top, mid, _ = earnings
    bad = make_credit(top, "5.00")
    fail_writes("referrals_settlementitem", f"NEW.prize_credit_id = {bad.pk}")
    # when settlement runs, top's whole settlement cannot be opened: its three items wait
    first = settlement_run(now=NOW)
    assert (first["paid_settlements"], first["set_aside_items"]) == (1, 3)
    assert player_balance(player_id=mid.pk) == Decimal("2.00")
    # when they are due again, each is tried alone: top's rewards are paid, the credit fails again
    second = settlement_run(now=NOW + dt.timedelta(minutes=10))
    assert (second["retried_items"], second["paid_settlements"], second["set_aside_items"]) == (
        3,
        2,
        1,
    )
    assert player_balance(player_id=top.pk) == Decimal("1.00")
    held = FailedItem.objects.get()
    assert (held.prize_credit_id, held.attempts) == (bad.pk, 2)
    # then, at its limit, it is held: later runs leave it alone and finish normally
    third = settlement_run(now=NOW + dt.timedelta(days=1))
    assert (third["retried_items"], third["set_aside_items"], third["backlog"]) == (0, 0, 0)
    # when staff repair the data and release it, it is paid once
    stop_failing_writes("referrals_settlementitem")
    failed_items_retry(ids=[held.pk], now=NOW + dt.timedelta(days=1))
    settlement_run(now=NOW + dt.timedelta(days=1, minutes=10))
    assert player_balance(player_id=top.pk) == Decimal("6.00")
    assert not FailedItem.objects.exists()


class RefusingWithGarbage(WalletPayout):
    """Refuses one player with an error text PostgreSQL cannot store as it is."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse

    def pay(self, payout, *, now):
        if payout.player_id == self.refuse:
            raise PayoutError("frozen\x00 at the provider \ud800" + "!" * 5000)
        return super().pay(payout, now=now)


@pytest.mark.django_db
def test_a_payout_error_with_nul_bytes_and_bad_text_is_recorded_cleaned(earnings):
    top, mid, _ = earnings
    counts = settlement_run(now=NOW, channel=RefusingWithGarbage(refuse=top.pk))
    assert (counts["paid_settlements"], counts["failed_settlements"]) == (1, 1)
    assert player_balance(player_id=mid.pk) == Decimal("2.00")
    failed = Settlement.objects.get(player=top)
    assert failed.error.startswith("PayoutError: frozen\ufffd at the provider ?!!!")
    assert len(failed.error) == 2000
    assert PayoutRetry.objects.get(player=top).last_error == failed.error


class EditedMeanwhile(WalletPayout):
    """While one player's payout is asked, someone marks one of its rewards settled by hand."""

    def __init__(self, player: int) -> None:
        self.player = player

    def pay(self, payout, *, now):
        if payout.player_id == self.player:
            reward_id = int(payout.items[0].split(":")[1])
            ReferralReward.objects.filter(pk=reward_id).update(status="settled", settled_at=now)
        return super().pay(payout, now=now)


@pytest.mark.django_db
def test_a_settlement_that_cannot_be_recorded_stays_sending_and_the_rest_is_recorded(earnings):
    top, mid, _ = earnings
    # when top's answer cannot be recorded (its reward is no longer pending)
    counts = settlement_run(now=NOW, channel=EditedMeanwhile(player=top.pk))
    # then mid is paid, top's settlement stays sending with the error, top backs off
    assert (counts["paid_settlements"], counts["unrecorded_settlements"]) == (1, 1)
    assert player_balance(player_id=mid.pk) == Decimal("2.00")
    stuck = Settlement.objects.get(player=top)
    assert stuck.status == "sending"
    assert stuck.error.startswith("not recorded: SettlementConflict: 1 rewards")
    retry = PayoutRetry.objects.get(player=top)
    assert retry.failures == 1
    # when the next run comes during the backoff, it is not stuck on it
    again = settlement_run(now=NOW + dt.timedelta(minutes=1))
    assert (again["resumed_settlements"], again["unrecorded_settlements"]) == (0, 0)
    # when staff put the reward back and the backoff ends, the same settlement is paid, once
    ReferralReward.objects.filter(beneficiary=top).update(status="pending", settled_at=None)
    later = settlement_run(now=retry.next_attempt_at)
    assert (later["resumed_settlements"], later["paid_settlements"]) == (1, 1)
    assert Settlement.objects.get(player=top).status == "paid"
    assert player_balance(player_id=top.pk) == Decimal("1.00")


@pytest.mark.django_db
def test_a_spent_budget_stops_settlement_with_a_backlog_that_the_next_run_pays_once(
    earnings, settings
):
    # given 4 pending rewards, settled 2 at a time
    settings.REFERRALS = replace(settings.REFERRALS, settlement_batch_size=2)
    top, mid, _ = earnings
    # when the budget is spent after one batch (resume check, claim check, one payout)
    first = settlement_run(now=NOW, budget=StopAfter(3))
    assert (first["batches"], first["settled_items"], first["backlog"]) == (1, 2, 2)
    # when the next run has time, it pays the rest and nothing twice
    second = settlement_run(now=NOW + dt.timedelta(minutes=10))
    assert (second["settled_items"], second["backlog"]) == (2, 0)
    assert player_balance(player_id=top.pk) + player_balance(player_id=mid.pk) == Decimal("3.00")


@pytest.mark.django_db
def test_a_budget_spent_before_the_payout_leaves_the_settlement_sending_for_the_next_run(
    earnings,
):
    top, mid, _ = earnings
    # when the budget ends between opening a batch's settlements and asking for the payouts
    first = settlement_run(now=NOW, budget=StopAfter(2))
    # then the settlements stay sending, unasked, and count in the backlog with the rest
    assert (first["batches"], first["paid_settlements"], first["backlog"]) == (1, 0, 4)
    sending = set(Settlement.objects.filter(status="sending").values_list("id", "payout_key"))
    assert len(sending) == 2
    # when the next run comes, it resumes exactly those settlements, same keys, paid once
    second = settlement_run(now=NOW + dt.timedelta(minutes=10))
    assert (second["resumed_settlements"], second["paid_settlements"]) == (2, 2)
    assert set(Settlement.objects.values_list("id", "payout_key")) == sending
    assert player_balance(player_id=top.pk) + player_balance(player_id=mid.pk) == Decimal("3.00")


@pytest.mark.django_db(transaction=True)
def test_two_settlers_at_once_with_an_unopenable_settlement_pay_the_rest_once(
    make_player, make_credit, chain, play, settings
):
    # given a player whose prizes overflow a settlement's total, ahead of 30 events' rewards,
    # settled in small batches so that the two settlers interleave
    settings.REFERRALS = replace(settings.REFERRALS, settlement_batch_size=7)
    whale = make_player()
    big = [make_credit(whale, "6000000000.00") for _ in range(2)]
    players = chain(4)
    for minute in range(30):
        play(players[-1], fee="1.37", when=at(2026, 3, 4, 10, minute))
    referral_tier2_create(now=NOW)
    referral_tier3_create(now=NOW)
    # when two workers settle at the same moment
    results = run_concurrently(lambda: settlement_run(now=NOW), lambda: settlement_run(now=NOW))
    # then neither failed, every healthy item is settled once, the whale's are set aside once
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r["settled_items"] for r in results) == 90
    assert not ReferralReward.objects.filter(status="pending").exists()
    assert sorted(FailedItem.objects.values_list("prize_credit_id", "attempts")) == [
        (credit.pk, 1) for credit in big
    ]
    assert player_balance(player_id=whale.pk) == Decimal("0")


@pytest.mark.django_db
def test_the_payout_backoff_written_in_sql_is_core_backoff_term_for_term(make_player):
    from django.db import connection

    from core.backoff import backoff
    from referrals import conf
    from referrals.services.settlement import _BACKOFF, _payout_backoff

    # given a player whose payouts keep failing, and PostgreSQL's random() seeded
    player = make_player()
    params = _payout_backoff(conf.load())
    with connection.cursor() as cursor:
        for failures in range(1, 12):  # 600 s x 2**10 is past the cap (86,400 s)
            cursor.execute("SELECT setseed(0.25)")
            cursor.execute("SELECT random(), random()")
            draws = cursor.fetchone()
            cursor.execute("SELECT setseed(0.25)")
            # when the statement counts one more failure
            values = {"now": NOW, **params, "players": [player.pk], "errors": ["x"]}
            cursor.execute(_BACKOFF, values)
            # then its wait is the helper's with the same draw (the insert draws the first; on
            # conflict, the update draws the second)
            draw = draws[0] if failures == 1 else draws[1]
            retry = PayoutRetry.objects.get(player=player)
            assert retry.failures == failures
            wait = (retry.next_attempt_at - NOW).total_seconds()
            expected = backoff(failures, **params, random=lambda draw=draw: draw)
            assert wait == pytest.approx(expected, abs=1e-5)
            # +-20 % around 600 s x 2**(failures - 1), capped at a day
            nominal = min(86400, 600 * 2 ** (failures - 1))
            assert 0.8 * nominal <= wait < 1.2 * nominal


class InterruptedChannel(WalletPayout):
    """The run ends while the provider is asked (Celery's soft limit, or the lease lost)."""

    def __init__(self, interrupt: BaseException) -> None:
        self.interrupt = interrupt

    def pay(self, payout, *, now):
        raise self.interrupt


@pytest.mark.django_db
@pytest.mark.parametrize("interrupt", RUN_INTERRUPTS)
def test_a_run_interrupted_inside_a_payout_ends_and_blames_no_settlement(earnings, interrupt):
    top, mid, _ = earnings
    # when the run's soft limit (or a lost lease) arrives inside the first payout call
    with pytest.raises(interrupt):
        settlement_run(now=NOW, channel=InterruptedChannel(interrupt("run over")))
    # then no settlement is recorded as unknown or failed, and nobody is backed off
    assert set(Settlement.objects.values_list("status", "error")) == {("sending", "")}
    assert not PayoutRetry.objects.exists()
    assert not FailedItem.objects.exists()
    keys = set(Settlement.objects.values_list("id", "payout_key"))
    # and the next run resumes them under the same keys and pays each once
    second = settlement_run(now=NOW + dt.timedelta(minutes=10), channel=WalletPayout())
    assert second["paid_settlements"] == 2
    assert set(Settlement.objects.values_list("id", "payout_key")) == keys
    assert player_balance(player_id=top.pk) + player_balance(player_id=mid.pk) == Decimal("3.00")


@pytest.mark.parametrize("interrupt", RUN_INTERRUPTS)
def test_what_ends_a_run_is_never_a_rows_fault(interrupt):
    with pytest.raises(interrupt):
        raise_unless_row_fault(interrupt("run over"))
