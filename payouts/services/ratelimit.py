"""A rate limit in Redis, shared by every worker process on every machine.

Stripe refuses requests above its rate limit (25/s in test mode, 100/s live) with 429s; a 429
still costs an attempt and a backoff, so the workers keep below the limit themselves. The limit
is a token bucket of ``burst`` tokens refilled at ``rate`` per second, kept as the generic cell
rate algorithm (GCRA) keeps it: one timestamp, the theoretical arrival time of the next request.
In any interval of ``T`` seconds at most ``burst + rate * T`` requests start, however many
workers take tokens.

Each caller reserves the next free slot and sleeps until it, instead of being told when a token
is due and racing the others for it. Racing callers wake together and all but one go back to
sleep; a token that falls due while none is awake is lost when the bucket is full, so a bucket
of one token delivered 92% of its rate to 16 threads. Reserved slots are never lost, so the
bucket can be small (a burst of 1 paces requests evenly) and still be used to the full.
"""

import time

from django.conf import settings

from core.redis_client import redis_script
from payouts.metrics import STRIPE_RATELIMIT_WAIT

# Reserve the next slot and return in milliseconds how long until it (0: now). The state is
# the theoretical arrival time (``tat``) of the request after the last one reserved: a slot
# may start up to ``burst - 1`` intervals before it, never before now. One script, so no two
# callers get the same slot. The clock is Redis's own (TIME), so workers on machines with
# skewed clocks share one timeline.
_TAKE_LUA = """
local interval = 1 / tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local slot = math.max(now, tat - (burst - 1) * interval)
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval),
           'PX', math.ceil((tat + interval - now) * 1000) + 1000)
return math.ceil((slot - now) * 1000)
"""


def token_take(*, bucket: str, rate: float, burst: int) -> float:
    """Reserve this caller's slot in the bucket and sleep until it; return the seconds spent
    waiting.

    One Lua script, atomic across processes; no polling and no retry. Redis being down raises
    ``redis.ConnectionError`` (a transient error) before anything is sent.
    """
    started = time.monotonic()
    script = redis_script(settings.REDIS_URL, _TAKE_LUA)
    wait_ms = int(script(keys=[f"ratelimit:{bucket}"], args=[rate, burst]))
    if wait_ms:
        time.sleep(wait_ms / 1000)
    return time.monotonic() - started


def stripe_token_take() -> float:
    """Take a token for one Stripe request (``STRIPE_RATE_LIMIT`` / ``STRIPE_RATE_BURST``);
    the wait goes to ``stakehold_stripe_ratelimit_wait_seconds``."""
    waited = token_take(
        bucket="stripe", rate=settings.STRIPE_RATE_LIMIT, burst=settings.STRIPE_RATE_BURST
    )
    STRIPE_RATELIMIT_WAIT.observe(waited)
    return waited


def token_bucket_reset(*, bucket: str) -> None:
    """Forget a bucket's state, so it starts full (benchmarks start from an idle system)."""
    redis_script(settings.REDIS_URL, _TAKE_LUA).registered_client.delete(f"ratelimit:{bucket}")
