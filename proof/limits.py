"""The proof runs set their own limits: they drive the platform far past what people do."""

import os

from django.conf import settings
from django.db import connection


def proof_limits_lift() -> None:
    """No throttle for this process's in-process API calls (the bench resolves one challenge
    hundreds of times a minute), and no statement timeout here or in the workers it starts
    (seeding a million stakers is a few long statements). The production defaults stay as they
    are for every other process."""
    settings.THROTTLE_RATES = dict.fromkeys(settings.THROTTLE_RATES)
    os.environ["DATABASE_STATEMENT_TIMEOUT"] = "0"
    connection.settings_dict.get("OPTIONS", {}).pop("options", None)
    connection.close()  # the next connection starts without the timeout
