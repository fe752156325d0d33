from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"

    def ready(self) -> None:
        # Lower layers announce what needs money moved; this app subscribes (see
        # challenges/signals.py).
        from challenges.signals import challenges_cancelled
        from payouts.receivers import refund_cancelled_challenges

        challenges_cancelled.connect(refund_cancelled_challenges, dispatch_uid="payouts.refunds")
