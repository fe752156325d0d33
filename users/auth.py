"""API authentication: django-rest-knox tokens behind the ``Authorization: Token <token>``
header clients always sent. Only a hash of each token is stored, and each expires."""

import binascii

from axes.backends import AxesStandaloneBackend
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's authentication, refusing a token that is not even text with a 401 (knox would
    let the decode error through as a 500)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except (UnicodeDecodeError, binascii.Error) as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        return super().authenticate_credentials(token)

    def _cleanup_token(self, auth_token) -> bool:
        """knox reads every token of the user on every request to delete the expired ones: a
        query per request for housekeeping that ``token_create`` does at each sign-in. Only a
        presented token that has expired goes through knox's cleanup (it is deleted, refused)."""
        if auth_token.expiry is None or auth_token.expiry >= timezone.now():
            return False
        return super()._cleanup_token(auth_token)


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "users.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>`, the token from `POST /api/auth/token/`.",
        }


class AdminLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check, for the admin login only (``AXES_ONLY_ADMIN_SITE``).

    A sign-in made by code without a request (a management command, a test) has no address to
    lock and no admin page in sight: it is passed on to the next backend instead of refused.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
