import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from games.services import game_session_finish, game_session_start
from referrals.models import Referral, ReferralReward
from referrals.services import ReferralError, referral_chain_ids, referral_create
from tests.referrals.conftest import LINKED_AT, run_concurrently


@pytest.mark.django_db
def test_a_player_cannot_refer_themselves(make_player):
    player = make_player()
    with pytest.raises(ReferralError, match=f"player {player.pk} cannot refer themselves"):
        referral_create(referrer_id=player.pk, referee_id=player.pk)


@pytest.mark.django_db
def test_the_database_refuses_a_self_referral_written_around_the_service(make_player):
    player = make_player()
    with pytest.raises(IntegrityError, match="referral_not_self"), transaction.atomic():
        Referral.objects.create(referrer=player, referee=player, created_at=LINKED_AT)


@pytest.mark.django_db
def test_a_two_player_cycle_is_refused_with_the_path(chain):
    # given a refers b
    a, b = chain(2)
    # when b tries to refer a, then the error explains the cycle
    with pytest.raises(ReferralError, match=rf"{a.pk} is already above {b.pk}.*cycle"):
        referral_create(referrer_id=b.pk, referee_id=a.pk)
    assert Referral.objects.count() == 1


@pytest.mark.django_db
def test_a_long_cycle_is_refused(chain):
    # given a -> b -> c -> d -> e
    a, _b, _c, _d, e = chain(5)
    # when the bottom tries to refer the top
    with pytest.raises(ReferralError, match="cycle") as raised:
        referral_create(referrer_id=e.pk, referee_id=a.pk)
    # then the message shows the path from e up to a
    assert str(raised.value).count("->") == 4


@pytest.mark.django_db
def test_a_referrer_is_set_once(chain, make_player):
    a, b = chain(2)
    other = make_player()
    with pytest.raises(ReferralError, match=f"player {b.pk} already has referrer {a.pk}"):
        referral_create(referrer_id=other.pk, referee_id=b.pk)


@pytest.mark.django_db
def test_an_unknown_player_is_refused(make_player):
    player = make_player()
    with pytest.raises(ReferralError, match="player 999999 does not exist"):
        referral_create(referrer_id=999999, referee_id=player.pk)
    with pytest.raises(ReferralError, match="player 999998 does not exist"):
        referral_create(referrer_id=player.pk, referee_id=999998)


@pytest.mark.django_db
def test_a_player_may_refer_many_and_the_chain_reads_upwards(chain, make_player):
    a, b, c = chain(3)
    d = make_player()
    referral_create(referrer_id=a.pk, referee_id=d.pk)
    assert referral_chain_ids(player_id=c.pk) == [c.pk, b.pk, a.pk]
    assert referral_chain_ids(player_id=d.pk) == [d.pk, a.pk]


@pytest.mark.django_db(transaction=True)
def test_two_opposite_referrals_at_once_never_make_a_cycle(make_player):
    # given x at the top of a short chain, and y alone
    for _ in range(5):
        x, mid, y = make_player(), make_player(), make_player()
        referral_create(referrer_id=x.pk, referee_id=mid.pk)
        # when, at the same moment, mid refers y and y refers x (together: x -> mid -> y -> x)
        results = run_concurrently(
            lambda x=x, mid=mid, y=y: referral_create(referrer_id=mid.pk, referee_id=y.pk),
            lambda x=x, y=y: referral_create(referrer_id=y.pk, referee_id=x.pk),
        )
        # then exactly one of them is recorded and the other is refused as a cycle
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(refused) == 1, results
        assert isinstance(refused[0], ReferralError)
        assert "cycle" in str(refused[0])
        for player in (x, mid, y):
            up = referral_chain_ids(player_id=player.pk)
            assert len(up) == len(set(up)) <= 3, up


@pytest.mark.django_db(transaction=True)
def test_a_session_finishing_while_its_referral_commits_still_earns_the_reward(make_player):
    """The link counts from its created_at: a session finished after that moment qualifies even
    when it finishes while the referral's transaction is still open."""
    referrer, referee = make_player(), make_player()
    session = game_session_start(
        player_id=referee.pk, game="snake", entry_fee="10.00", now=timezone.now()
    )
    paused, go = threading.Event(), threading.Event()

    def pause_before_the_insert(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "referrals_referral"'):
            paused.set()
            go.wait(timeout=30)
        return execute(sql, params, many, context)

    def refer() -> None:
        try:
            with connection.execute_wrapper(pause_before_the_insert):
                referral_create(referrer_id=referrer.pk, referee_id=referee.pk)
        finally:
            connections.close_all()

    def finish() -> None:
        try:
            game_session_finish(session_id=session.pk, score=1)
        finally:
            connections.close_all()

    # given a referral whose transaction is open, just before its INSERT
    referring = threading.Thread(target=refer, daemon=True)
    referring.start()
    assert paused.wait(timeout=30)
    # when the referee finishes a paid session meanwhile (then the referral commits)
    finishing = threading.Thread(target=finish, daemon=True)
    finishing.start()
    finishing.join(timeout=1.0)  # it may wait for the referral's transaction
    go.set()
    referring.join(timeout=30)
    finishing.join(timeout=30)
    assert not referring.is_alive()
    assert not finishing.is_alive()
    # then the link existed before the session finished, and the reward exists
    link = Referral.objects.get(referee=referee)
    session.refresh_from_db()
    assert link.created_at <= session.finished_at
    assert list(
        ReferralReward.objects.filter(session=session).values_list("tier", "beneficiary_id")
    ) == [(1, referrer.pk)]
