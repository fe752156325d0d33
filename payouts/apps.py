from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"

    def ready(self) -> None:
        # Lower layers announce what needs money moved; this app subscribes (see
        # challenges/signals.py).
        from challenges.signals import challenges_cancelled
        from payouts.receivers import refund_cancelled_challenges

        challenges_cancelled.connect(refund_cancelled_challenges, dispatch_uid="payouts.refunds")

        # The challenge API shows its job's progress row through this registry.
        from challenges.providers import payout_summary_register
        from payouts.selectors import payout_job_summary

        payout_summary_register(lambda challenge_id: payout_job_summary(challenge_id=challenge_id))

        # Every process declares the payout counters; the scrape also reads the active jobs.
        from core.metrics import scrape_collector_register
        from payouts.metrics import JobsCollector

        scrape_collector_register(JobsCollector())
