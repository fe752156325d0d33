"""What the platform exposes besides the API: HTTPS settings, the schema and its docs, Flower."""

import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from deploy.run import flower_env, process_table

pytestmark = pytest.mark.django_db


def _production_env(**extra: str) -> dict[str, str]:
    # As a production host has it: none of the suite's own switches (the browser tests allow
    # async-unsafe calls in this process).
    dropped = {"DEBUG", "API_DOCS_PUBLIC", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    return {
        **env,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "stakehold.example,testserver",
        **extra,
    }


def test_check_deploy_is_clean_with_debug_off():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=_production_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


_PRINT_SETTINGS = """
import django; django.setup()
from django.conf import settings as s
print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS,
      getattr(s, "SECURE_PROXY_SSL_HEADER", None))
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "True True 31536000 None"),
        (
            {"SECURE_PROXY_SSL_HEADER": "true"},
            "True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https')",
        ),
        ({"DEBUG": "true"}, "False False 0 None"),
    ],
)
def test_https_settings_follow_debug_and_the_proxy_header_is_opt_in(extra, expected):
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_SETTINGS],
        env=_production_env(DJANGO_SETTINGS_MODULE="config.settings", **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == expected


def test_schema_and_docs_are_staff_only_by_default(client_for, make_user, staff):
    assert client_for().get("/api/schema/").status_code == 401
    assert client_for(make_user()).get("/api/schema/").status_code == 403
    assert client_for(staff).get("/api/schema/").status_code == 200
    assert client_for().get("/api/docs/").status_code == 401


def test_swagger_ui_loads_its_scripts_from_our_own_static_files(client_for, staff):
    page = client_for(staff).get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr.net" not in page
    assert "//unpkg.com" not in page


_PUBLIC_SCHEMA = """
import django; django.setup()
from django.test import Client
print(Client().get("/api/schema/").status_code)
"""


def test_api_docs_public_makes_the_schema_public():
    result = subprocess.run(
        [sys.executable, "-c", _PUBLIC_SCHEMA],
        env=_production_env(DJANGO_SETTINGS_MODULE="config.settings", API_DOCS_PUBLIC="true"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "200"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)  # noqa: S310 - loopback
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


def test_flower_is_bound_to_loopback_behind_basic_auth():
    # Given Flower started exactly as `make up` starts it
    port = _free_port()
    argv = process_table(port=_free_port(), flower_port=port)["flower"]
    assert "--address=127.0.0.1" in argv
    env = flower_env({**os.environ, "FLOWER_BASIC_AUTH": ""}, "ops", "s3cret-pass")
    flower = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while _status(f"http://127.0.0.1:{port}/") == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        # Then a visitor without the password is refused and the operator gets in
        assert _status(f"http://127.0.0.1:{port}/") == 401
        assert _status(f"http://127.0.0.1:{port}/", "ops:wrong") == 401
        assert _status(f"http://127.0.0.1:{port}/", "ops:s3cret-pass") == 200
    finally:
        flower.terminate()
        flower.wait(timeout=15)
