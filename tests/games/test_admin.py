import pytest
from django.urls import reverse

from games.models import GameSession, LeaderboardEntry, PrizePool
from tests.games.conftest import at

MODELS = [
    "player",
    "gamesession",
    "leaderboardentry",
    "prizepool",
    "prizecredit",
    "badge",
    "playerbadge",
    "notification",
    "inboxmessage",
    "prediction",
    "livestatssnapshot",
    "rowfailure",
]


@pytest.mark.django_db
@pytest.mark.parametrize("model", MODELS)
def test_every_games_changelist_renders(admin_client, model, play):
    play(score=5, when=at(2026, 3, 4, 10), fee="1.00")
    response = admin_client.get(reverse(f"admin:games_{model}_changelist"))
    assert response.status_code == 200


@pytest.mark.django_db
def test_a_finalised_pool_cannot_be_edited_in_the_admin(admin_client, play):
    play(score=5, when=at(2026, 3, 4, 10), fee="1.00")
    pool = PrizePool.objects.get(period="daily")
    url = reverse("admin:games_prizepool_change", args=[pool.pk])
    admin_client.post(url, {"amount": "999.00", "status": "open"})
    pool.refresh_from_db()
    assert str(pool.amount) == "0.50"


@pytest.mark.django_db
def test_the_void_action_goes_through_the_service(admin_client, play):
    session = play(score=5, when=at(2026, 3, 4, 10))
    response = admin_client.post(
        reverse("admin:games_gamesession_changelist"),
        {"action": "void_sessions", "_selected_action": [session.pk]},
    )
    assert response.status_code == 302
    assert GameSession.objects.get(pk=session.pk).voided_at is not None
    assert not LeaderboardEntry.objects.exists()
