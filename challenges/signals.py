"""What the challenge lifecycle tells the apps above it (they subscribe in ``AppConfig.ready``).

``challenges`` sits below ``payouts`` and never imports it: when challenges are cancelled
without staff (the deadline sweep found nobody to play against, or the challenged user
declined), it sends ``challenges_cancelled`` after commit, and payouts creates their refund
jobs. The watchdog creates any that a lost signal missed, so the signal is about latency,
never about money.
"""

from django.dispatch import Signal

# Sent with ``challenge_ids``: the challenges just cancelled.
challenges_cancelled = Signal()
