"""A token bucket in Redis, shared by every worker process on every machine.

Stripe refuses requests above its rate limit (25/s in test mode, 100/s live) with 429s; a 429
still costs an attempt and a backoff, so the workers keep below the limit themselves. The bucket
holds at most ``burst`` tokens and refills at ``rate`` tokens per second, so in any interval of
``T`` seconds at most ``burst + rate * T`` requests start, however many workers take tokens.
"""

import time
from functools import cache

import redis
from django.conf import settings

from core.redis_client import redis_from_url
from payouts.metrics import STRIPE_RATELIMIT_WAIT

# Refill, then take one token if there is one; otherwise report in milliseconds how long until
# one is due. One script, so concurrent callers never both see the same token. The clock is
# Redis's own (TIME), so workers on machines with skewed clocks share one timeline.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait_ms = 0
if tokens >= 1 then
    tokens = tokens - 1
else
    wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait_ms
"""


@cache
def _take_script(redis_url: str) -> redis.commands.core.Script:
    """One client and one loaded script per process (and per URL, for tests that switch)."""
    return redis_from_url(redis_url).register_script(_TAKE_LUA)


def token_take(*, bucket: str, rate: float, burst: int) -> float:
    """Block until the bucket gives this caller a token; return the seconds spent waiting.

    Atomic across processes (one Lua script per try). Callers that lose a race for a token are
    told how long until the next one and sleep exactly that long, so the bucket stays busy
    without polling. Redis being down raises ``redis.ConnectionError`` (a transient error).
    """
    script = _take_script(settings.REDIS_URL)
    started = time.monotonic()
    while True:
        wait_ms = int(script(keys=[f"ratelimit:{bucket}"], args=[rate, burst]))
        if wait_ms == 0:
            return time.monotonic() - started
        time.sleep(wait_ms / 1000)


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
    _take_script(settings.REDIS_URL).registered_client.delete(f"ratelimit:{bucket}")
