"""Receivers of the lower apps' signals, connected in ``PayoutsConfig.ready``."""

from typing import Any

from payouts.services.jobs import refund_jobs_create_for_cancelled


def refund_cancelled_challenges(*, challenge_ids: list[int], **kwargs: Any) -> None:
    """Challenges were cancelled without staff: open their refund jobs in the transaction
    that cancels them. Set-based over the challenges the signal names."""
    refund_jobs_create_for_cancelled(challenge_ids=challenge_ids)
