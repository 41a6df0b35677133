"""An external payout is requested under one idempotency key per set of items, whatever dies.

Settlement is two-phase: it commits a `sending` Settlement that links its items, then asks the
channel to pay with a key derived from the settlement's id, outside any transaction, then records
the outcome. These tests kill or confuse it between the phases and check that a retry re-sends the
SAME settlement under the SAME key, and that no item is ever sent under two keys.
"""

import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal

import pytest

from referrals.models import (
    Account,
    LedgerEntry,
    PayoutRetry,
    ReferralReward,
    Settlement,
    SettlementItem,
)
from referrals.payouts import Payout, PayoutError, PayoutOutcomeUnknown, WalletPayout, WebhookPayout
from referrals.services import referral_tier2_create, settlement_run
from tests.referrals.conftest import at

NOW = at(2026, 3, 4, 12, 0, 40)


class Died(BaseException):
    """The worker process died right here (SIGKILL, hard time limit): nothing after it runs."""


class ExternalChannel(WalletPayout):
    """An external payout service that records every request; `script` says what each request
    does in turn: "pay", "die" (paid, then the worker dies), "unknown", "refuse"."""

    leaves_platform = True

    def __init__(self, *script: str, sent: list[Payout] | None = None) -> None:
        self.script = list(script)
        self.sent = sent if sent is not None else []

    def pay(self, payout: Payout, *, now: dt.datetime) -> str:
        self.sent.append(payout)
        step = self.script.pop(0) if self.script else "pay"
        if step == "die":
            raise Died
        if step == "unknown":
            raise PayoutOutcomeUnknown("read timed out after the request was sent")
        if step == "refuse":
            raise PayoutError("account frozen at the provider")
        return f"ext:{payout.key}"


def keys_by_item(sent: list[Payout]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = defaultdict(set)
    for payout in sent:
        for item in payout.items:
            keys[item].add(payout.key)
    return keys


def assert_each_item_sent_under_one_key(sent: list[Payout]) -> None:
    twice = {item: keys for item, keys in keys_by_item(sent).items() if len(keys) > 1}
    assert twice == {}, f"items requested under more than one idempotency key: {twice}"


def assert_all_settled_once_and_paid_out() -> None:
    assert not ReferralReward.objects.filter(status="pending").exists()
    assert SettlementItem.objects.count() == ReferralReward.objects.count()
    external = sum(
        (e.amount for e in LedgerEntry.objects.filter(account=Account.PAYOUT_EXTERNAL)),
        Decimal(0),
    )
    assert external == sum((r.amount for r in ReferralReward.objects.all()), Decimal(0))


@pytest.fixture
def earnings(chain, play):
    """top -> mid -> bottom; bottom plays twice at 10.00: mid earns 2.00, top 1.00."""
    top, mid, bottom = chain(3)
    play(bottom, fee="10.00", when=at(2026, 3, 4, 10))
    play(bottom, fee="10.00", when=at(2026, 3, 4, 11))
    referral_tier2_create(now=NOW)
    return top, mid, bottom


def more_earnings(play, bottom, minute: int) -> None:
    """New rewards for the same players arrive: the next run's item sets differ."""
    play(bottom, fee="10.00", when=at(2026, 3, 4, 12, minute))
    referral_tier2_create(now=at(2026, 3, 4, 12, minute + 1))


@pytest.mark.django_db
def test_paid_then_died_before_recording_is_resent_with_the_same_key(earnings, play):
    top, mid, bottom = earnings
    sent: list[Payout] = []
    # given the service paid the first player and the worker died before recording it
    with pytest.raises(Died):
        settlement_run(now=NOW, channel=ExternalChannel("die", sent=sent))
    [first] = sent
    # and new rewards arrived for the same players meanwhile
    more_earnings(play, bottom, minute=5)
    # when the run is redelivered
    counts = settlement_run(now=NOW + dt.timedelta(minutes=10), channel=ExternalChannel(sent=sent))
    # then it first re-sent the same settlement, same key, same items, same amount
    assert sent[1] == first
    assert counts["resumed_settlements"] >= 1
    # and the new rewards went in a new settlement with its own key: no item under two keys
    assert_each_item_sent_under_one_key(sent)
    settlement = Settlement.objects.get(payout_key=first.key)
    assert (settlement.status, settlement.player_id, settlement.total) == (
        "paid",
        first.player_id,
        first.amount,
    )
    assert settlement.payout_reference == f"ext:{first.key}"
    assert_all_settled_once_and_paid_out()
    # and a further run sends nothing
    again = ExternalChannel()
    settlement_run(now=NOW + dt.timedelta(minutes=20), channel=again)
    assert again.sent == []
    assert {top.pk, mid.pk} == set(Settlement.objects.values_list("player_id", flat=True))


@pytest.mark.django_db
def test_an_unknown_outcome_is_retried_with_the_same_key_until_known(earnings, play):
    top, mid, bottom = earnings
    sent: list[Payout] = []
    # top's request gets no usable answer three times, then succeeds
    channel = ExternalChannel("unknown", "pay", sent=sent)  # top first (lower id), then mid
    counts = settlement_run(now=NOW, channel=channel)
    assert (counts["unknown_settlements"], counts["paid_settlements"]) == (1, 1)
    pending = Settlement.objects.get(player=top)
    assert pending.status == "sending"
    assert "timed out" in pending.error
    assert pending.items.count() == 2  # still claimed by this settlement
    assert not ReferralReward.objects.filter(beneficiary=top, status="settled").exists()
    retry = PayoutRetry.objects.get(player=top)
    assert retry.failures == 1
    more_earnings(play, bottom, minute=5)
    # before the backoff ends, nothing is sent for top
    quiet = ExternalChannel()
    settlement_run(now=NOW + dt.timedelta(seconds=1), channel=quiet)
    assert [p.player_id for p in quiet.sent] == [mid.pk]  # mid's new rewards only
    sent += quiet.sent
    for attempt in ("unknown", "unknown", "pay"):
        retry = PayoutRetry.objects.filter(player=top).first()
        settlement_run(now=retry.next_attempt_at, channel=ExternalChannel(attempt, sent=sent))
    top_requests = [p for p in sent if p.player_id == top.pk]
    # four attempts of the first settlement, all with its key, then one new settlement
    assert [p.key for p in top_requests[:4]] == [pending.payout_key] * 4
    assert len({p.key for p in top_requests}) == 2
    assert_each_item_sent_under_one_key(sent)
    pending.refresh_from_db()
    assert (pending.status, pending.error) == ("paid", "")
    assert_all_settled_once_and_paid_out()
    assert not PayoutRetry.objects.exists()


@pytest.mark.django_db
def test_a_refused_payout_releases_its_items_to_a_new_settlement(earnings):
    top, _mid, _ = earnings
    sent: list[Payout] = []
    settlement_run(now=NOW, channel=ExternalChannel("refuse", sent=sent))
    failed = Settlement.objects.get(player=top)
    assert (failed.status, failed.error) == (
        "failed",
        "PayoutError: account frozen at the provider",
    )
    assert not failed.items.exists()  # released: the service said it did not pay
    retry = PayoutRetry.objects.get(player=top)
    settlement_run(now=retry.next_attempt_at, channel=ExternalChannel(sent=sent))
    paid = Settlement.objects.get(player=top, status="paid")
    assert paid.payout_key != failed.payout_key
    assert [p.key for p in sent if p.player_id == top.pk] == [failed.payout_key, paid.payout_key]
    assert_all_settled_once_and_paid_out()


@pytest.mark.django_db
def test_webhook_timeout_after_the_service_accepted_is_resent_with_the_same_key(
    earnings, play, payout_service
):
    _top, _mid, bottom = earnings
    # given the payout service accepts each request but answers after the client gave up
    payout_service.delay = 1.5
    channel = WebhookPayout(url=payout_service.url, secret="", timeout=1)
    counts = settlement_run(now=NOW, channel=channel)
    assert (counts["paid_settlements"], counts["failed_settlements"]) == (0, 0)
    assert counts["unknown_settlements"] == 2
    assert set(Settlement.objects.values_list("status", flat=True)) == {"sending"}
    assert len(payout_service.requests) == 2
    # and new rewards arrive; the service answers in time again
    more_earnings(play, bottom, minute=5)
    payout_service.delay = 0
    later = max(PayoutRetry.objects.values_list("next_attempt_at", flat=True))
    settlement_run(now=later, channel=channel)
    # then the timed-out payouts were re-sent with their keys, and no item went out under two
    requests = [json.loads(body) for _headers, body in payout_service.requests]
    first_keys = [r["idempotency_key"] for r in requests[:2]]
    assert [r["idempotency_key"] for r in requests[2:4]] == first_keys
    assert [h["idempotency-key"] for h, _ in payout_service.requests[2:4]] == first_keys
    assert requests[2]["items"] == requests[0]["items"]
    by_item: dict[str, set[str]] = defaultdict(set)
    for request in requests:
        for item in request["items"]:
            by_item[item].add(request["idempotency_key"])
    assert all(len(keys) == 1 for keys in by_item.values()), by_item
    assert_all_settled_once_and_paid_out()
