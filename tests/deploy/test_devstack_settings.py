"""The embedded PostgreSQL runs with the settings the stack gives it (deploy/devstack.py)."""

import os

import pytest
from django.db import connection

from deploy.devstack import POSTGRES_SETTINGS

pytestmark = pytest.mark.django_db


def test_the_embedded_postgres_runs_with_the_stack_settings():
    if not os.environ.get("DEVSTACK_DIR"):
        pytest.skip("the suite runs against servers named by DATABASE_URL, not the embedded one")
    with connection.cursor() as cursor:
        for name, value in POSTGRES_SETTINGS.items():
            cursor.execute(f"SHOW {name}")
            assert cursor.fetchone()[0] == value
