"""Exponential backoff with jitter, shared by the base task and the Stripe rail's entry retries."""

import random


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    ``base * 2**attempt`` capped at ``cap``, stretched by up to 25% of random jitter so that
    retries of many tasks that failed together spread out. The jitter never shrinks a delay,
    so delays keep growing until the cap (5, 10, 20, 40, 80 s with base 5).
    """
    delay = min(cap, base * (2 ** max(attempt, 0)))
    return min(cap, delay * (1 + random.random() / 4))  # noqa: S311 - jitter, not security
