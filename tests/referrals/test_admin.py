from dataclasses import replace

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from referrals.models import FailedItem, PayoutHold, Referral, ReferralReward
from referrals.services import referral_tier2_create, settlement_run
from tests.referrals.conftest import at, fail_writes

NOW = at(2026, 3, 4, 12, 0, 40)


@pytest.fixture
def settled_world(chain, play, make_credit):
    top, mid, bottom = chain(3)
    play(bottom, fee="10.00", when=at(2026, 3, 4, 10))
    make_credit(top, "5.00")
    referral_tier2_create(now=NOW)
    settlement_run(now=NOW)
    return top, mid, bottom


@pytest.fixture
def held_item(chain, play, settings):
    """A tier-2 event at its attempt limit (1), waiting for staff."""
    settings.REFERRALS = replace(settings.REFERRALS, item_max_attempts=1)
    *_, bottom = chain(3)
    session = play(bottom, fee="10.00", when=at(2026, 3, 4, 10))
    fail_writes("referrals_referralreward", f"NEW.tier = 2 AND NEW.session_id = {session.pk}")
    assert referral_tier2_create(now=NOW)["held"] == 1
    return FailedItem.objects.get()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model",
    [
        "referral",
        "referralreward",
        "settlement",
        "ledgertransaction",
        "ledgerentry",
        "payouthold",
        "payoutretry",
        "referralplayer",
        "faileditem",
    ],
)
def test_every_referrals_admin_list_and_detail_renders(admin_client, settled_world, model):
    from django.apps import apps

    response = admin_client.get(reverse(f"admin:referrals_{model}_changelist"))
    assert response.status_code == 200
    obj = apps.get_model("referrals", model).objects.first()
    if obj is not None:
        response = admin_client.get(reverse(f"admin:referrals_{model}_change", args=[obj.pk]))
        assert response.status_code == 200


@pytest.mark.django_db
def test_the_player_page_shows_tree_chain_and_ledger_with_running_balance(
    admin_client, settled_world
):
    top, mid, bottom = settled_world
    page = admin_client.get(reverse("admin:referrals_referralplayer_change", args=[top.pk]))
    html = page.content.decode()
    assert mid.handle in html
    assert bottom.handle in html
    assert "<td>5.50</td>" in html  # 0.50 tier-2 reward + 5.00 prize: the balance after both
    page = admin_client.get(reverse("admin:referrals_referralplayer_change", args=[bottom.pk]))
    assert f"{mid.handle} -&gt; {top.handle}" in page.content.decode()


@pytest.mark.django_db
def test_settled_rewards_cannot_be_changed_or_deleted_in_the_admin(admin_client, settled_world):
    reward = ReferralReward.objects.filter(status="settled").first()
    amount = reward.amount
    url = reverse("admin:referrals_referralreward_change", args=[reward.pk])
    admin_client.post(url, {"amount": "999.00", "status": "pending"})
    reward.refresh_from_db()
    assert (reward.status, reward.amount) == ("settled", amount)
    delete = reverse("admin:referrals_referralreward_delete", args=[reward.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_staff_hold_and_release_payouts_with_an_audit_trail(admin_client, admin_user, chain):
    _top, mid = chain(2)
    url = reverse("admin:referrals_referralplayer_changelist")
    admin_client.post(url, {"action": "hold_payouts", "_selected_action": [mid.pk]})
    hold = PayoutHold.objects.get(player=mid)
    assert (hold.held_by, hold.released_at) == (admin_user, None)
    admin_client.post(url, {"action": "release_payouts", "_selected_action": [mid.pk]})
    hold.refresh_from_db()
    assert hold.released_by == admin_user
    assert hold.released_at is not None
    assert list(
        LogEntry.objects.filter(object_id=str(mid.pk)).values_list("change_message", flat=True)
    ) == ["Released payouts", "Held payouts"]


@pytest.mark.django_db
def test_the_admin_refuses_a_referral_cycle_with_a_clear_message(admin_client, chain):
    top, _mid, bottom = chain(3)
    response = admin_client.post(
        reverse("admin:referrals_referral_add"), {"referrer": bottom.pk, "referee": top.pk}
    )
    assert response.status_code == 200
    assert "would make a cycle" in response.content.decode()
    assert Referral.objects.count() == 2


@pytest.mark.django_db
def test_the_admin_creates_a_referral_through_the_service(admin_client, make_player):
    a, b = make_player(), make_player()
    response = admin_client.post(
        reverse("admin:referrals_referral_add"), {"referrer": a.pk, "referee": b.pk}
    )
    assert response.status_code == 302
    assert Referral.objects.get(referee=b).referrer == a


@pytest.mark.django_db
def test_staff_with_the_permission_release_a_held_item_with_an_audit_trail(admin_client, held_item):
    url = reverse("admin:referrals_faileditem_changelist")
    assert "Retry the selected items" in admin_client.get(url).content.decode()
    admin_client.post(url, {"action": "retry", "_selected_action": [held_item.pk]})
    held_item.refresh_from_db()
    assert held_item.attempts == 0
    assert LogEntry.objects.get(object_id=str(held_item.pk)).change_message == (
        "Released for a fresh set of attempts"
    )


@pytest.mark.django_db
def test_staff_who_may_only_view_failed_items_cannot_release_them(client, held_item):
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_faileditem"))
    client.force_login(viewer)
    url = reverse("admin:referrals_faileditem_changelist")
    page = client.get(url)
    assert page.status_code == 200
    assert "Retry the selected items" not in page.content.decode()
    client.post(url, {"action": "retry", "_selected_action": [held_item.pk]})
    held_item.refresh_from_db()
    assert held_item.attempts == 1
