from collections.abc import Iterator

import pytest

from notifications.backends import backend, pusher_client
from tests.fakes.pusher_server import FakePusher


@pytest.fixture
def pusher_fake(settings) -> Iterator[FakePusher]:
    """A running fake Pusher, with this process's settings and client pointed at it."""
    fake = FakePusher().start()
    for name, value in fake.settings().items():
        setattr(settings, name, value)
    backend.cache_clear()
    pusher_client.cache_clear()
    yield fake
    fake.stop()
    backend.cache_clear()
    pusher_client.cache_clear()


@pytest.fixture
def pusher_worker_env(pusher_fake) -> dict[str, str]:
    """Environment that points worker processes at the fake Pusher."""
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in pusher_fake.settings().items()
    }
