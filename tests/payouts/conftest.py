"""Fixtures shared by the payouts tests."""

import pytest


@pytest.fixture
def json_client(client_for):
    def make(user=None):
        client = client_for(user)
        client.default_format = "json"
        return client

    return make


@pytest.fixture
def staff_client(staff, json_client):
    return json_client(staff)
