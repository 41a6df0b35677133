import datetime as dt
from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from django.db import connection, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from games.models import GameSession
from games.services import game_session_finish, game_session_start
from referrals.models import FailedItem, ReferralReward, TierProgress
from referrals.services import (
    referral_create,
    referral_tier1_backfill,
    referral_tier2_create,
    referral_tier3_create,
    reward_amount,
)
from referrals.services.failures import failed_items_retry
from tests.referrals.conftest import (
    StopAfter,
    at,
    fail_writes,
    run_concurrently,
    stop_failing_writes,
)

NOW = at(2026, 3, 4, 12)


def rewards_of(session):
    return {
        r.tier: (r.beneficiary_id, r.amount) for r in ReferralReward.objects.filter(session=session)
    }


def create_upper_tiers(now=NOW):
    return referral_tier2_create(now=now), referral_tier3_create(now=now)


@pytest.mark.django_db
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5])
def test_tiers_follow_the_chain_up_to_three_levels(chain, play, length):
    # given a chain of `length` players, the bottom one plays a 10.00 game
    players = chain(length)
    bottom = players[-1]
    session = play(bottom, fee="10.00")
    # when the tier jobs run
    create_upper_tiers()
    # then the referrers up to three levels above earn 10 %, 5 %, 2 %
    above = list(reversed(players[:-1]))[:3]
    expected_amounts = [Decimal("1.00"), Decimal("0.50"), Decimal("0.20")]
    assert rewards_of(session) == {
        tier: (player.pk, amount)
        for tier, (player, amount) in enumerate(zip(above, expected_amounts, strict=False), 1)
    }


@pytest.mark.django_db
def test_tier_one_is_created_with_the_finish_itself(chain, play):
    referrer, player = chain(2)
    session = play(player, fee="2.00")
    # no job has run: the receiver wrote tier 1 in the finishing transaction
    assert rewards_of(session) == {1: (referrer.pk, Decimal("0.20"))}


@pytest.mark.django_db
def test_a_rolled_back_finish_leaves_no_reward(chain):
    _referrer, player = chain(2)
    session = game_session_start(player_id=player.pk, game="snake", entry_fee="2.00", now=NOW)

    def finish_then_fail() -> None:
        with transaction.atomic():
            game_session_finish(session_id=session.pk, score=1, now=NOW)
            raise RuntimeError("the finishing transaction fails after the signal")

    with pytest.raises(RuntimeError):
        finish_then_fail()
    assert not ReferralReward.objects.exists()


@pytest.mark.django_db
def test_free_sessions_and_unreferred_players_earn_nothing(chain, make_player, play):
    _referrer, player = chain(2)
    play(player, fee="0.00")
    play(make_player(), fee="5.00")
    create_upper_tiers()
    assert not ReferralReward.objects.exists()


@pytest.mark.django_db
def test_a_link_counts_only_for_sessions_finished_after_it(make_player, play):
    # given a plays before being referred, then once after
    a, b, c = make_player(), make_player(), make_player()
    before = play(c, fee="10.00", when=at(2026, 3, 4, 9))
    referral_create(referrer_id=b.pk, referee_id=c.pk, now=at(2026, 3, 4, 10))
    # b's own referrer arrives later still
    referral_create(referrer_id=a.pk, referee_id=b.pk, now=at(2026, 3, 4, 11, 30))
    after = play(c, fee="10.00", when=at(2026, 3, 4, 11))
    latest = play(c, fee="10.00", when=at(2026, 3, 4, 11, 45))
    create_upper_tiers()
    # then only sessions after each link count, for that link
    assert rewards_of(before) == {}
    assert rewards_of(after) == {1: (b.pk, Decimal("1.00"))}
    assert rewards_of(latest) == {1: (b.pk, Decimal("1.00")), 2: (a.pk, Decimal("0.50"))}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fee", "tiers"),
    [
        # fee x 10 % / 5 % / 2 %, each rounded half-even on its own
        ("0.15", {1: "0.02", 2: "0.01"}),  # 0.015 -> 0.02 (half to even), 0.0075, 0.003 -> 0
        ("0.25", {1: "0.02", 2: "0.01"}),  # 0.025 -> 0.02, 0.0125 -> 0.01, 0.005 -> 0.00
        ("0.05", {}),  # 0.005 -> 0.00: no reward at all
        ("0.35", {1: "0.04", 2: "0.02", 3: "0.01"}),  # 0.035 -> 0.04, 0.0175 -> 0.02, 0.007
        ("1.05", {1: "0.10", 2: "0.05", 3: "0.02"}),  # 0.105 -> 0.10, 0.0525, 0.021
        ("0.75", {1: "0.08", 2: "0.04", 3: "0.02"}),  # 0.075 -> 0.08, 0.0375 -> 0.04, 0.015
        ("12345678.99", {1: "1234567.90", 2: "617283.95", 3: "246913.58"}),
    ],
)
def test_awkward_amounts_round_half_even_per_reward(chain, play, fee, tiers):
    *_, bottom = chain(4)
    session = play(bottom, fee=fee)
    create_upper_tiers()
    assert {t: str(a) for t, (_, a) in rewards_of(session).items()} == tiers


@pytest.mark.django_db
@settings(max_examples=300, deadline=None)
@given(
    base=st.decimals(min_value=0, max_value=Decimal("9999999999.99"), places=2),
    rate=st.decimals(min_value=0, max_value=1, places=4),
)
def test_sql_rounding_is_the_python_rounding(base, rate):
    # the set-based jobs round in SQL, tier 1 in Python: they must agree on every amount
    expected = (base * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    assert reward_amount(base, rate) == expected
    with connection.cursor() as cursor:
        cursor.execute("SELECT referrals_money_round(%s::numeric * %s::numeric)", [base, rate])
        assert cursor.fetchone()[0] == expected


@pytest.mark.django_db
def test_running_the_tier_jobs_again_changes_nothing(chain, play):
    *_, bottom = chain(4)
    for hour in range(3):
        play(bottom, fee="3.00", when=at(2026, 3, 4, 9 + hour))
    first = create_upper_tiers()
    assert (first[0]["created"], first[1]["created"]) == (3, 3)
    before = list(ReferralReward.objects.order_by("id").values())
    again = create_upper_tiers()
    assert (again[0]["created"], again[1]["created"]) == (0, 0)
    assert list(ReferralReward.objects.order_by("id").values()) == before


@pytest.mark.django_db
def test_events_after_the_slot_wait_for_a_later_run(chain, play):
    *_, bottom = chain(3)
    session = play(bottom, fee="3.00", when=at(2026, 3, 4, 12, 0, 30))
    referral_tier2_create(now=at(2026, 3, 4, 12, 0, 0))
    assert set(rewards_of(session)) == {1}
    referral_tier2_create(now=at(2026, 3, 4, 12, 1, 0))
    assert set(rewards_of(session)) == {1, 2}


@pytest.mark.django_db
def test_batches_are_bounded_and_the_cursor_advances(chain, play, settings):
    settings.REFERRALS = replace(settings.REFERRALS, tier_batch_size=2)
    *_, bottom = chain(3)
    for minute in range(5):
        play(bottom, fee="1.00", when=at(2026, 3, 4, 10, minute))
    counts = referral_tier2_create(now=NOW)
    # 5 tier-1 rewards read 2 at a time: batches of 2, 2, 1
    assert counts == {
        "created": 5,
        "scanned": 5,
        "batches": 3,
        "failed": 0,
        "retried": 0,
        "held": 0,
        "backlog": 0,
    }
    assert TierProgress.objects.get(tier=2).scanned_through == NOW


@pytest.mark.django_db
def test_an_event_committed_late_within_the_lag_is_still_rewarded(chain, play, settings):
    settings.REFERRALS = replace(settings.REFERRALS, tier_lag_seconds=600)
    *_, bottom = chain(3)
    referral_tier2_create(now=NOW)
    # given an event stamped 5 minutes before the last run, committed only now
    late = play(bottom, fee="1.00", when=NOW - dt.timedelta(minutes=5))
    # when the next run comes
    referral_tier2_create(now=NOW + dt.timedelta(minutes=1))
    # then it has its tier-2 reward
    assert set(rewards_of(late)) == {1, 2}


@pytest.mark.django_db
def test_the_rate_in_force_is_stored_on_each_reward(chain, play, settings):
    *_, bottom = chain(3)
    rates = {**settings.REFERRALS.rates, 1: Decimal("0.2"), 2: Decimal("0.125")}
    settings.REFERRALS = replace(settings.REFERRALS, rates=rates)
    session = play(bottom, fee="1.00")
    referral_tier2_create(now=NOW)
    rates = dict(ReferralReward.objects.filter(session=session).values_list("tier", "rate"))
    assert rates == {1: Decimal("0.2000"), 2: Decimal("0.1250")}
    assert rewards_of(session)[2][1] == Decimal("0.12")  # 0.125 -> 0.12, half to even


@pytest.mark.django_db(transaction=True)
def test_two_processors_at_once_create_each_reward_once(chain, play, settings):
    # given 60 events four levels down, processed in batches of 7
    settings.REFERRALS = replace(settings.REFERRALS, tier_batch_size=7)
    *_, bottom = chain(4)
    for minute in range(60):
        play(bottom, fee="1.10", when=at(2026, 3, 4, 10, minute))
    # when two tier-2 and two tier-3 processors run at the same moment
    results = run_concurrently(
        lambda: referral_tier2_create(now=NOW),
        lambda: referral_tier2_create(now=NOW),
        lambda: referral_tier3_create(now=NOW),
        lambda: referral_tier3_create(now=NOW),
    )
    # then none failed, each reward exists once, and the counts add up to what exists
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results[0]["created"] + results[1]["created"] == 60
    assert results[2]["created"] + results[3]["created"] == 60
    assert ReferralReward.objects.filter(tier=2).count() == 60
    assert ReferralReward.objects.filter(tier=3).count() == 60


@pytest.mark.django_db
def test_backfilled_history_gets_all_three_tiers_although_the_jobs_are_past_it(chain, play):
    # given a chain of four whose tier jobs have already run to NOW
    top, upper, mid, bottom = chain(4)
    play(bottom, fee="1.00", when=at(2026, 3, 4, 11))
    create_upper_tiers(now=NOW)
    assert TierProgress.objects.get(tier=2).scanned_through == NOW
    # and an import writes older paid sessions of the bottom player without the signal
    old = at(2026, 2, 1, 9)  # far behind the cursor minus the look-back
    imported = GameSession.objects.bulk_create(
        GameSession(
            player_id=bottom.pk,
            game="pong",
            status="finished",
            entry_fee="10.00",
            started_at=old - dt.timedelta(minutes=5),
            finished_at=old + dt.timedelta(minutes=minute),
        )
        for minute in range(3)
    )
    # when the backfill runs, then the tier jobs run again
    assert referral_tier1_backfill(players=[bottom.pk], now=NOW) == 3
    create_upper_tiers(now=NOW + dt.timedelta(minutes=1))
    # then every imported event has its three tiers, once
    for session in imported:
        assert rewards_of(session) == {
            1: (mid.pk, Decimal("1.00")),
            2: (upper.pk, Decimal("0.50")),
            3: (top.pk, Decimal("0.20")),
        }
    # and running the backfill again creates nothing
    assert referral_tier1_backfill(players=[bottom.pk], now=NOW) == 0
    assert ReferralReward.objects.count() == 3 * 4


@pytest.mark.django_db
@pytest.mark.parametrize("job", [referral_tier2_create, referral_tier3_create])
def test_one_unprocessable_event_does_not_stop_the_tier_job(chain, play, settings, job):
    # given four events down a chain of four, the first one's upper-tier rewards cannot be
    # written (as with an amount that overflows its column)
    settings.REFERRALS = replace(settings.REFERRALS, item_max_attempts=2)
    *_, bottom = chain(4)
    poisoned, *healthy = [play(bottom, fee="2.00", when=at(2026, 3, 4, 10, m)) for m in range(4)]
    fail_writes("referrals_referralreward", f"NEW.tier > 1 AND NEW.session_id = {poisoned.pk}")
    tier = 2 if job is referral_tier2_create else 3
    name = f"referral-tier{tier}"
    # when the job runs
    first = job(now=NOW)
    # then it returns normally, the healthy events have their reward and the bad one is recorded
    assert (first["created"], first["failed"], first["backlog"]) == (3, 1, 0)
    assert [tier in rewards_of(s) for s in (poisoned, *healthy)] == [False, True, True, True]
    failure = FailedItem.objects.get()
    assert failure.job == name
    assert failure.reward == ReferralReward.objects.get(session=poisoned, tier=1)
    assert failure.attempts == 1
    assert failure.error.startswith("DataError: numeric field overflow")
    # when the next minute's run comes, before the row's backoff ends
    second = job(now=NOW + dt.timedelta(minutes=1))
    # then it is not stuck on it: the row is not even tried, and new events go through
    assert (second["created"], second["failed"], second["retried"]) == (0, 0, 0)
    assert FailedItem.objects.get().attempts == 1
    # when the backoff (5 minutes) ends, it is retried once, fails, and reaches its limit (2)
    third = job(now=NOW + dt.timedelta(minutes=6))
    assert (third["retried"], third["failed"], third["held"]) == (1, 1, 1)
    failure.refresh_from_db()
    assert failure.attempts == 2
    assert failure.next_attempt_at == NOW + dt.timedelta(minutes=6 + 10)
    # then a held row is left alone however late it gets
    assert job(now=NOW + dt.timedelta(days=2))["retried"] == 0
    # when staff repair the data and release it, the next run creates its reward once
    stop_failing_writes("referrals_referralreward")
    assert failed_items_retry(ids=[failure.pk], now=NOW + dt.timedelta(days=2)) == 1
    fourth = job(now=NOW + dt.timedelta(days=2, minutes=1))
    assert (fourth["retried"], fourth["created"], fourth["held"]) == (1, 1, 0)
    assert tier in rewards_of(poisoned)
    assert not FailedItem.objects.exists()
    assert ReferralReward.objects.filter(tier=tier).count() == 4


@pytest.mark.django_db
def test_a_spent_budget_stops_the_tier_job_with_a_backlog_that_the_next_run_takes(
    chain, play, settings
):
    # given five events, read two at a time
    settings.REFERRALS = replace(settings.REFERRALS, tier_batch_size=2)
    *_, bottom = chain(3)
    for minute in range(5):
        play(bottom, fee="1.00", when=at(2026, 3, 4, 10, minute))
    # when the run's budget is spent after its first batch
    first = referral_tier2_create(now=NOW, budget=StopAfter(1))
    # then it stops cleanly and says what is left
    assert (first["created"], first["batches"], first["backlog"]) == (2, 1, 3)
    # when the next run has time, it takes the rest, creating nothing twice
    second = referral_tier2_create(now=NOW + dt.timedelta(minutes=1))
    assert (second["created"], second["backlog"]) == (3, 0)
    assert ReferralReward.objects.filter(tier=2).count() == 5
    assert TierProgress.objects.get(tier=2).scanned_through == NOW + dt.timedelta(minutes=1)


@pytest.mark.django_db
def test_a_budget_spent_half_way_through_a_row_by_row_batch_keeps_its_place(
    chain, play, monkeypatch
):
    # given four events in one batch, the second unprocessable: the batch goes row by row
    *_, bottom = chain(3)
    sessions = [play(bottom, fee="1.00", when=at(2026, 3, 4, 10, m)) for m in range(4)]
    fail_writes("referrals_referralreward", f"NEW.tier = 2 AND NEW.session_id = {sessions[1].pk}")
    # when the budget ends after two rows (loop head, row 1, row 2)
    first = referral_tier2_create(now=NOW, budget=StopAfter(3))
    # then the rows done are committed, and the cursor stands after them
    assert (first["created"], first["failed"], first["backlog"]) == (1, 1, 2)
    assert TierProgress.objects.get(tier=2).scanned_through == sessions[1].finished_at
    # when the next run comes, the rest is done and the bad row is not tried again yet
    second = referral_tier2_create(now=NOW + dt.timedelta(minutes=1))
    assert (second["created"], second["failed"], second["backlog"]) == (2, 0, 0)
    assert [2 in rewards_of(s) for s in sessions] == [True, False, True, True]


@pytest.mark.django_db
def test_the_set_aside_backoff_written_in_sql_is_core_backoff_term_for_term(chain, play):
    from core.backoff import backoff
    from referrals import conf
    from referrals.services.failures import RETRY_CAP_SECONDS, failed_items_record

    # given a reward that keeps failing
    top, bottom = chain(2)
    play(bottom, fee="10.00")
    reward = ReferralReward.objects.get(beneficiary=top)
    base = conf.load().item_retry_seconds
    for attempts in range(1, 14):  # 300 s x 2**12 is past the cap (86,400 s)
        # when one more failure is recorded
        failed_items_record(job="settlement", rewards=[reward.pk], exc=ValueError("x"), now=NOW)
        # then its wait is the helper's
        failure = FailedItem.objects.get(reward=reward)
        assert failure.attempts == attempts
        wait = (failure.next_attempt_at - NOW).total_seconds()
        assert wait == pytest.approx(backoff(attempts, base=base, cap=RETRY_CAP_SECONDS))
