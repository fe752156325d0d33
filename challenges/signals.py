"""What the challenge lifecycle tells the apps above it (they subscribe in ``AppConfig.ready``).

``challenges`` sits below ``payouts`` and never imports it: when challenges are cancelled
without staff (the deadline sweep found nobody to play against, or the challenged user
declined), it sends ``challenges_cancelled`` inside the transaction that cancels them, and
payouts creates their refund jobs there. So the refund job commits with the cancellation or
not at all: no crash between the two can leave a cancelled challenge holding stakes with no
job to return them, and nothing has to scan every challenge ever cancelled to find one.
"""

from django.dispatch import Signal

# Sent with ``challenge_ids``: the challenges just cancelled, inside the cancelling
# transaction (a receiver's writes commit or roll back with it). A receiver runs while that
# transaction holds the challenges' rows locked, so it must be short and set-based.
challenges_cancelled = Signal()
