from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = "Referrals"

    def ready(self) -> None:
        from games.signals import session_finished
        from referrals import checks  # noqa: F401 -- registers the settings check
        from referrals.services.rewards import on_session_finished

        session_finished.connect(on_session_finished, dispatch_uid="referrals.tier1_reward")
