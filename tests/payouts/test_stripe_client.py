"""The Stripe adapter through the real ``stripe`` library against the fake Stripe server, and the
shared Redis token bucket."""

import threading
import time

import pytest
import redis
import requests
import stripe
from urllib3.connection import HTTPConnection

from payouts.services import stripe_http
from payouts.services.ratelimit import (
    SEND_JITTER,
    Send,
    token_bucket_reset,
    token_sent,
    token_take,
)
from payouts.services.stripe_client import (
    ACCOUNT_NOT_CONNECTED,
    Outcome,
    account_create,
    account_find,
    account_onboarding_link,
    transfer_create,
    transfers_find,
)
from payouts.services.stripe_http import RateLimitedRequestsClient
from proof.stripe_bench import busiest_window


@pytest.fixture
def fake(fake_stripe, settings):
    settings.STRIPE_RATE_LIMIT = 1000.0
    settings.STRIPE_RATE_BURST = 100
    fake_stripe.accounts_put(
        [{"id": "acct_on", "payouts_enabled": True}, {"id": "acct_off", "payouts_enabled": False}]
    )
    return fake_stripe


def _create(entry_id=1, job_id=7, amount=500, destination="acct_on"):
    return transfer_create(
        entry_id=entry_id, job_id=job_id, amount=amount, currency="usd", destination=destination
    )


def test_same_key_and_params_give_the_same_transfer(fake):
    # Given a transfer created for entry 1
    first = _create()
    # When the same entry is sent again (a retry)
    second = _create()
    # Then Stripe answers with the first transfer and created only one
    assert first.outcome == second.outcome == Outcome.PAID
    assert first.transfer_id == second.transfer_id
    stats = fake.stats()
    assert stats["created_per_key"] == {"payout:1": 1}
    assert stats["replays"] == 1
    transfer = fake.transfers()[0]
    assert transfer["transfer_group"] == "job-7"
    assert transfer["metadata"] == {"job_id": "7", "entry_id": "1"}
    assert transfer["destination"] == "acct_on"
    assert transfer["amount"] == 500


def test_same_key_with_other_params_is_a_permanent_idempotency_error(fake):
    _create(amount=500)
    result = _create(amount=501)
    assert result.outcome == Outcome.PERMANENT
    assert result.reason == "stripe_idempotency_error"
    assert fake.stats()["transfers_created"] == 1


def test_a_key_still_in_flight_is_a_transient_409(fake):
    # Given a first request that Stripe is still executing
    fake.configure(latency=1.0)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", _create()))
    first.start()
    time.sleep(0.3)
    # When a second request with the same key arrives
    results["second"] = _create()
    first.join()
    # Then the second is told to come back later, and the first created the only transfer
    assert results["second"].outcome == Outcome.TRANSIENT
    assert "409" in results["second"].error
    assert results["first"].outcome == Outcome.PAID
    assert fake.stats()["created_per_key"] == {"payout:1": 1}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("rate_limit", "stripe_rate_limited"),
        ("server_error", "stripe_unavailable"),
        ("lock_timeout", "stripe_unavailable"),
        ("reset", "stripe_connection_error"),
        ("timeout", "stripe_connection_error"),
        ("lost", "stripe_connection_error"),
    ],
)
def test_every_injected_fault_is_transient_and_a_retry_pays_once(fake, fault, reason):
    # Given Stripe failing every request with this fault (timeouts outlast the 2 s client limit)
    fake.configure(faults={fault: 1.0}, timeout_seconds=2.5)
    # When an entry is sent
    result = _create()
    # Then the failure is transient, with a stable reason
    assert result.outcome == Outcome.TRANSIENT, result
    assert result.reason == reason
    # And once Stripe recovers, the retry pays exactly once (a lost response replays the
    # transfer created behind it)
    fake.configure(faults={})
    retry = _create()
    assert retry.outcome == Outcome.PAID
    assert fake.stats()["created_per_key"] == {"payout:1": 1}


@pytest.mark.parametrize("destination", ["acct_unknown", "acct_off"])
def test_unknown_or_disabled_destination_is_permanent_not_connected(fake, destination):
    result = _create(destination=destination)
    assert result.outcome == Outcome.PERMANENT
    assert result.reason == ACCOUNT_NOT_CONNECTED
    # A refused request stores nothing under the key: once connected, the same key pays
    fake.accounts_put([{"id": destination, "payouts_enabled": True}])
    assert _create(destination=destination).outcome == Outcome.PAID


def test_a_bad_api_key_is_permanent(fake, settings):
    settings.STRIPE_API_KEY = "rk_wrong"
    result = _create()
    assert result.outcome == Outcome.PERMANENT
    assert result.reason == "stripe_http_401"


def test_transfers_are_found_by_group_and_metadata_across_pages(fake):
    # Given 250 transfers in job 7's group and one in another job's group
    for entry_id in range(1, 251):
        assert _create(entry_id=entry_id).outcome == Outcome.PAID
    _create(entry_id=999, job_id=8)
    # When looking for three entries, one of which was never paid
    found = transfers_find(job_id=7, entry_ids={1, 250, 404})
    # Then the paid ones map to their transfers (found on the first and last pages)
    by_entry = {int(t["metadata"]["entry_id"]): t["id"] for t in fake.transfers()}
    assert found == {1: by_entry[1], 250: by_entry[250]}
    # And a page that fails now and then is asked again rather than failing the whole walk
    fake.configure(seed=1, faults={"server_error": 0.4})
    assert transfers_find(job_id=7, entry_ids={1, 404}) == {1: by_entry[1]}
    assert fake.stats()["faults"]["server_error"] > 0


@pytest.fixture
def counted_bucket(fake, settings, redis_client):
    """A full Stripe bucket of 1,000 tokens that hardly refills; yields how many were taken:
    how far ahead the next free slot lies, in refill intervals (about 1,000 s each)."""
    settings.STRIPE_RATE_LIMIT = 0.001
    settings.STRIPE_RATE_BURST = 1000
    token_bucket_reset(bucket="stripe")
    interval = (1 + SEND_JITTER) / settings.STRIPE_RATE_LIMIT

    def taken() -> int:
        seconds, micros = redis_client.time()
        next_slot = float(redis_client.get("ratelimit:stripe") or seconds)
        return round((next_slot - seconds - micros / 1e6) / interval)

    yield taken
    token_bucket_reset(bucket="stripe")


def test_every_stripe_request_of_every_kind_takes_exactly_one_token(fake, counted_bucket):
    # Given 101 transfers in job 7's group (two list pages), one sent twice (a replay)
    for entry_id in range(1, 102):
        assert _create(entry_id=entry_id).outcome == Outcome.PAID
    assert _create(entry_id=1).outcome == Outcome.PAID
    # When the transfers are looked up, an account created, linked and looked up
    assert len(transfers_find(job_id=7, entry_ids={1, 404})) == 1
    account = account_create(user_id=5)
    assert account_onboarding_link(account_id=account.id)
    assert account_find(user_id=5) == account
    # Then the bucket gave exactly one token per request Stripe received: 102 creations,
    # 2 list pages, 1 account, 1 link, 1 account page
    assert fake.stats()["requests"] == 107
    assert counted_bucket() == 107


def test_a_slow_connect_lies_before_the_token_not_between_it_and_stripe(fake, monkeypatch):
    # Given connections that take a second to open (as a TLS handshake far away can), and
    # the moment each token is granted written down
    connect = HTTPConnection.connect

    def slow_connect(self):
        time.sleep(1.0)
        connect(self)

    granted: list[float] = []
    take = stripe_http.stripe_token_take

    def recorded_take() -> Send:
        send = take()
        granted.append(time.time())
        return send

    monkeypatch.setattr(HTTPConnection, "connect", slow_connect)
    monkeypatch.setattr(stripe_http, "stripe_token_take", recorded_take)
    # When a thread without a connection yet (its own session) sends a transfer
    thread = threading.Thread(target=_create)
    thread.start()
    thread.join()
    # Then its request reached Stripe right after its token, the connect done before it
    (arrived,) = fake.stats()["post_times"]
    assert len(granted) == 1
    assert arrived - granted[0] < 0.5, arrived - granted[0]


def test_a_request_the_library_retries_takes_a_token_again(fake, counted_bucket, monkeypatch):
    # Given the library set to retry connection errors twice, and Stripe resetting every one
    monkeypatch.setattr(stripe, "api_base", fake.url)
    monkeypatch.setattr(stripe, "max_network_retries", 2)
    monkeypatch.setattr(stripe, "default_http_client", RateLimitedRequestsClient(timeout=2))
    fake.configure(faults={"reset": 1.0})
    # When a transfer is asked for
    with pytest.raises(stripe.APIConnectionError):
        stripe.Transfer.create(
            api_key="sk_test_fake",
            idempotency_key="payout:1",
            amount=500,
            currency="usd",
            destination="acct_on",
        )
    # Then each of the three requests that reached Stripe took its own token
    assert fake.stats()["faults"]["reset"] == 3
    assert counted_bucket() == 3


def test_the_wait_for_a_token_is_not_part_of_the_recorded_exchange(fake, settings):
    # Given a bucket of one token refilled twice a second
    settings.STRIPE_RATE_LIMIT = 2.0
    settings.STRIPE_RATE_BURST = 1
    token_bucket_reset(bucket="stripe")
    # When two transfers are sent one after the other, the second waiting about 0.5 s
    assert _create(entry_id=1).outcome == Outcome.PAID
    started = time.monotonic()
    second = _create(entry_id=2)
    # Then the second's exchange, as recorded, starts after its wait and lasts only the call
    assert time.monotonic() - started >= 0.4
    assert second.call is not None
    assert second.call.duration_ms < 300
    assert (second.call.finished_at - second.call.started_at).total_seconds() < 0.3
    token_bucket_reset(bucket="stripe")


def test_redis_down_while_taking_a_token_is_a_redis_error_and_nothing_is_sent(fake, settings):
    # Given the rate limit's Redis unreachable
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    # When a transfer is sent, the Redis error comes out as itself (a transient error of the
    # task), not as a Stripe connection error that would count as an attempt at Stripe
    with pytest.raises(redis.ConnectionError):
        _create()
    # And Stripe received nothing
    assert fake.stats()["requests"] == 0


def test_control_endpoints_work_over_http(fake):
    requests.post(f"{fake.url}/_fake/config", json={"faults": {"server_error": 1.0}}, timeout=5)
    assert _create().outcome == Outcome.TRANSIENT
    stats = requests.get(f"{fake.url}/_fake/stats", timeout=5).json()
    assert stats["faults"]["server_error"] == 1
    assert len(stats["post_times"]) == 1
    reply = requests.post(f"{fake.url}/_fake/config", json={"faults": {"nope": 1}}, timeout=5)
    assert reply.status_code == 400
    requests.post(f"{fake.url}/_fake/reset", timeout=5)
    assert requests.get(f"{fake.url}/_fake/stats", timeout=5).json()["requests"] == 0


def test_the_library_error_for_a_missing_transfer_is_a_404(fake, settings):
    with pytest.raises(stripe.InvalidRequestError):
        stripe.Transfer.retrieve("tr_nope", api_key=settings.STRIPE_API_KEY)


def _tokens_taken(
    *, bucket: str, rate: float, burst: int, callers: int, seconds: float = 0, stall: float = 0
):
    """When each request was sent, sorted: ``callers`` threads, each with its own Redis
    connection (as separate worker processes would), from a fresh bucket, each taking a token,
    sending (recording the time) and telling the limiter (``token_sent``), for ``seconds`` (or
    once when 0). The first caller's first send comes ``stall`` seconds after its token, as
    from a thread starved between the two."""
    token_bucket_reset(bucket=bucket)
    taken: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def caller(stalled: float):
        while True:
            send = token_take(bucket=bucket, rate=rate, burst=burst)
            time.sleep(stalled)
            stalled = 0
            with lock:
                taken.append(time.monotonic())
            token_sent(send)
            if time.monotonic() >= deadline:
                return

    threads = [
        threading.Thread(target=caller, args=(stall if n == 0 else 0,)) for n in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(taken)


@pytest.mark.parametrize("burst", [5, 1])
def test_token_bucket_bounds_every_one_second_window(burst):
    # Given a bucket of 20 tokens/s with a burst of 5 (or of 1: requests evenly paced), shared
    # by 4 threads for two seconds
    taken = _tokens_taken(bucket="window-test", rate=20, burst=burst, callers=4, seconds=2.0)
    # Then no one-second window holds more than the rate, and the rate is reached
    busiest, _ = busiest_window(taken)
    assert busiest <= 20, busiest
    span = taken[-1] - taken[0]
    assert (len(taken) - burst) / span >= 18, (len(taken), span)


def test_a_send_stalled_after_its_token_counts_when_it_was_sent():
    # Given a bucket of 5 tokens/s shared by 3 threads for three seconds, the first of which
    # sends its first request 0.9 s after its token (its entry in the log of sends, made at
    # the token, would leave the log's window 0.9 s before the request arrived)
    taken = _tokens_taken(bucket="stall-test", rate=5, burst=1, callers=3, seconds=3.0, stall=0.9)
    # Then no one-second window of the sends holds more than the rate
    busiest, _ = busiest_window(taken)
    assert busiest <= 5, (busiest, taken)


def test_requests_granted_together_still_leave_at_most_the_rate_in_any_second():
    # Given a full bucket of 20 at a rate of 20/s, and 30 callers at once: the bucket grants
    # 20 at once and then one every 50 ms, as when threads woke late, their slots long past,
    # and all send at the same moment as the threads after them
    taken = _tokens_taken(bucket="late-test", rate=20, burst=20, callers=30)
    # Then 20 left at once and the other 10 waited until the first 20 were a second old
    assert taken[19] - taken[0] < 0.5
    assert taken[20] - taken[0] >= 1.0
    busiest, _ = busiest_window(taken)
    assert busiest == 20
