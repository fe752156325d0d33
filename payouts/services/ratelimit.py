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
``rate`` sends in the last ``1 + SEND_JITTER`` seconds, however late its thread woke; once the
request's bytes are out, ``token_sent`` moves its entry in the log to that moment. Each entry
is then no later than the request's arrival while it waits to be sent and no earlier once it
is sent, so a thread stalled between its entry and its send (an overloaded machine starved
threads of 4 processes for more than 30 ms, and 22 requests arrived within one second at a
limit of 20) is counted when it sent, not when it asked. The extra ``SEND_JITTER`` covers what
still lies between the log and Stripe's clock: the network, a few milliseconds apart from one
request to the next. So no one-second window sends more than ``rate`` requests (unless a
thread stalls for more than the whole window between its entry and its send), at the price of
pacing slots at ``rate / (1 + SEND_JITTER)``: slots paced at the full rate would leave the log
to do the pacing, with every caller waiting twice.
"""

import logging
import time
from dataclasses import dataclass

import redis
from django.conf import settings

from core.redis_client import redis_script
from payouts.metrics import STRIPE_RATELIMIT_WAIT

logger = logging.getLogger(__name__)

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
# spread. 30 ms leaves room for the network's and costs 3% of the rate.
SEND_JITTER = 0.03

# Record a send in the log of recent sends (a sorted set scored by Redis's clock) unless the
# last ARGV[2] seconds hold ARGV[1] sends already; return {0, the entry's member} when
# recorded, else {the milliseconds until the oldest of them leaves that window, ''}. Members
# are the time and the log's size, unique even for two sends in one microsecond.
_SEND_LUA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local sends = redis.call('ZCARD', KEYS[1])
if sends >= limit then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
    return {math.max(1, math.ceil((oldest + window - now) * 1000)), ''}
end
local member = string.format('%.6f:%d', now, sends)
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {0, member}
"""

# Move a send's entry in the log to now, its bytes being out (added again if a stall longer
# than the window let it be dropped meanwhile).
_SENT_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
"""


@dataclass(frozen=True, slots=True)
class Send:
    """A send recorded in a bucket's log: ``token_sent`` restamps it once it is sent."""

    log: str
    member: str
    # Seconds the caller waited for its slot and for room in the log.
    waited: float


def token_take(*, bucket: str, rate: float, burst: int) -> Send:
    """Reserve this caller's slot in the bucket (paced at ``rate / (1 + SEND_JITTER)``), sleep
    until it, then record the send in the log (waiting while its last ``1 + SEND_JITTER``
    seconds hold ``rate`` sends, or ``burst`` if that is more). Call ``token_sent`` with the
    result once the request is sent.

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
    while True:
        wait_ms, member = send(keys=[f"{key}:sent"], args=[limit, window])
        if not wait_ms:
            return Send(f"{key}:sent", member.decode(), time.monotonic() - started)
        time.sleep(int(wait_ms) / 1000)


def token_sent(send: Send) -> None:
    """Move ``send``'s entry in the log to now, the request's bytes being out.

    Redis failing here is logged, not raised: the request has gone, and its entry, left at the
    time it was taken, still counts it (only what lay between the two is not covered).
    """
    try:
        redis_script(settings.REDIS_URL, _SENT_LUA)(
            keys=[send.log], args=[send.member, 1 + SEND_JITTER]
        )
    except redis.RedisError:
        logger.warning("rate limit: the send in %s kept its first time", send.log, exc_info=True)


def stripe_token_take() -> Send:
    """Take a token for one Stripe request (``STRIPE_RATE_LIMIT`` / ``STRIPE_RATE_BURST``);
    the wait goes to ``stakehold_stripe_ratelimit_wait_seconds``."""
    send = token_take(
        bucket="stripe", rate=settings.STRIPE_RATE_LIMIT, burst=settings.STRIPE_RATE_BURST
    )
    STRIPE_RATELIMIT_WAIT.observe(send.waited)
    return send


def token_bucket_reset(*, bucket: str) -> None:
    """Forget a bucket's state, so it starts full (benchmarks start from an idle system)."""
    redis_script(settings.REDIS_URL, _TAKE_LUA).registered_client.delete(
        f"ratelimit:{bucket}", f"ratelimit:{bucket}:sent"
    )
