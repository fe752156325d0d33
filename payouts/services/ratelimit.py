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

The bucket bounds when slots fall, not when requests leave: a thread that wakes late (its
process busy elsewhere, waiting for the GIL) sends together with the threads whose slots come
after its own. Busy processes at a job's start woke threads 15-30 ms late, and the bench's
fake Stripe counted 102-104 requests within one second at a limit of 100. So a caller whose
slot has come also records its send in a log of recent sends, and waits while that log holds
``rate`` sends in the last ``1 + SEND_JITTER`` seconds, however late its thread woke. The extra
``SEND_JITTER`` covers what still lies between the log and Stripe's clock: the thread taking
the GIL back after Redis answers, and the bytes leaving, a few milliseconds apart from one
request to the next. So no one-second window sends more than ``rate`` requests, at the price
of pacing slots at ``rate / (1 + SEND_JITTER)``: slots paced at the full rate would leave the
log to do the pacing, with every caller waiting twice.
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


# Seconds of spread allowed for between a send's entry in the log and its arrival at Stripe.
# With a log of exactly one second, 2 processes x 8 threads at 100/s still sent 101 and 102
# requests within one second by the workers' own clocks (two runs): a few milliseconds of
# spread. 30 ms leaves room for a busier machine and costs 3% of the rate.
SEND_JITTER = 0.03

# Record a send in the log of recent sends (a sorted set scored by Redis's clock) unless the
# last ARGV[2] seconds hold ARGV[1] sends already; return 0 when recorded, else the
# milliseconds until the oldest of them leaves that window. Members are the time and the
# log's size, unique even for two sends in one microsecond.
_SEND_LUA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local sends = redis.call('ZCARD', KEYS[1])
if sends >= limit then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
    return math.max(1, math.ceil((oldest + window - now) * 1000))
end
redis.call('ZADD', KEYS[1], now, string.format('%.6f:%d', now, sends))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return 0
"""


def token_take(*, bucket: str, rate: float, burst: int) -> float:
    """Reserve this caller's slot in the bucket (paced at ``rate / (1 + SEND_JITTER)``), sleep
    until it, then record the send in the log (waiting while its last ``1 + SEND_JITTER``
    seconds hold ``rate`` sends, or ``burst`` if that is more); return the seconds spent
    waiting.

    Atomic across processes (two Lua scripts); no polling of the bucket. Redis being down
    raises ``redis.ConnectionError`` (a transient error) before anything is sent.
    """
    started = time.monotonic()
    key = f"ratelimit:{bucket}"
    window = 1 + SEND_JITTER
    take = redis_script(settings.REDIS_URL, _TAKE_LUA)
    wait_ms = int(take(keys=[key], args=[rate / window, burst]))
    if wait_ms:
        time.sleep(wait_ms / 1000)
    send = redis_script(settings.REDIS_URL, _SEND_LUA)
    # A burst larger than the rate asks for that many at once: the log lets it out.
    limit = max(1, int(rate), burst)
    while wait_ms := int(send(keys=[f"{key}:sent"], args=[limit, window])):
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
    redis_script(settings.REDIS_URL, _TAKE_LUA).registered_client.delete(
        f"ratelimit:{bucket}", f"ratelimit:{bucket}:sent"
    )
