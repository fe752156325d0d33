import pytest
from django.db import OperationalError

from core import api


@pytest.fixture(autouse=True)
def _fresh_readiness(monkeypatch):
    # Each test starts without a cached answer.
    monkeypatch.setattr(api, "_readiness", None)


def test_healthz_answers_without_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_the_database_only(client, monkeypatch):
    # A broker nobody can reach changes nothing: readiness is about this pod serving requests.
    monkeypatch.setattr("config.celery.app.conf.broker_url", "redis://127.0.0.1:1/0")
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


@pytest.mark.django_db
def test_readyz_asks_the_database_once_per_cache_period(
    client, settings, django_assert_num_queries
):
    settings.READYZ_CACHE_SECONDS = 60
    with django_assert_num_queries(1):
        for _ in range(20):
            assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_fails(client, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(api.connection, "cursor", broken_cursor)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "error: OperationalError"},
    }
