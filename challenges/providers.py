"""What apps above challenges contribute to a challenge's view, registered in their
``AppConfig.ready`` (the way the admin's autodiscovery fills its registry).

``challenges`` sits below ``payouts`` and never imports it, yet the challenge API shows the
progress row of the challenge's payout job. Payouts registers the function that reads it
(``payouts.selectors.payout_job_summary``), so the progress math stays in one place and this
app depends only on this small contract: a callable from a challenge id to
``{status, progress_percent}`` or None.
"""

from collections.abc import Callable

PayoutSummary = Callable[[int], dict | None]

_payout_summary: PayoutSummary | None = None


def payout_summary_register(provider: PayoutSummary) -> None:
    global _payout_summary
    _payout_summary = provider


def challenge_payout_summary(*, challenge_id: int) -> dict | None:
    """The challenge's payout progress, or None (no job, or no provider installed)."""
    return _payout_summary(challenge_id) if _payout_summary is not None else None
