"""API authentication: django-rest-knox tokens behind the ``Authorization: Token <token>``
header clients always sent. Only a hash of each token is stored, and each expires."""

import binascii
from hmac import compare_digest

from axes.backends import AxesStandaloneBackend
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS, knox_settings
from rest_framework import exceptions

from core.db import columns_sql, prepared_cursor, row_model

AuthToken = get_token_model()
User = get_user_model()

# The permissions a user holds, directly or through a group, as "app_label.codename" (what
# ModelBackend loads in two queries): the one definition the token lookup and the
# one-permission check below build on. ``{user_id}`` is the SQL naming the user.
_PERMISSIONS_HELD_SQL = f"""
SELECT ct.app_label || '.' || p.codename
FROM {Permission._meta.db_table} AS p
JOIN {ContentType._meta.db_table} AS ct ON ct.id = p.content_type_id
WHERE p.id IN (
    SELECT up.permission_id FROM {User.user_permissions.through._meta.db_table} AS up
    WHERE up.user_id = {{user_id}}
    UNION ALL
    SELECT gp.permission_id
    FROM {Group.permissions.through._meta.db_table} AS gp
    JOIN {User.groups.through._meta.db_table} AS ug ON ug.group_id = gp.group_id
    WHERE ug.user_id = {{user_id}}
)
"""  # noqa: S608 - names from the models, values as parameters

# knox's lookup (the tokens sharing the presented token's key, each with its user), written
# by hand: it runs on every authenticated request, and the ORM's compilation of it cost more
# CPU than the whole rest of the authentication. An active staff member's permissions come
# with it (NULL for anyone else): every staff request asks for one, which was a second round
# trip.
_TOKEN_SQL = f"""
SELECT {columns_sql(AuthToken, "t")}, {columns_sql(User, "u")},
    CASE WHEN u.is_staff AND u.is_active AND NOT u.is_superuser
        THEN ARRAY({_PERMISSIONS_HELD_SQL.format(user_id="u.id")})
    END
FROM {AuthToken._meta.db_table} AS t
JOIN {User._meta.db_table} AS u ON u.{User._meta.pk.column} = t.user_id
WHERE t.token_key = %s
"""  # noqa: S608 - names from the models, values as parameters

# Whether a user holds one permission.
_PERMISSION_HELD_SQL = f"""
SELECT %(perm)s IN ({_PERMISSIONS_HELD_SQL.format(user_id="%(user_id)s")})
"""


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's authentication, refusing a token that is not even text with a 401 (knox would
    let the decode error through as a 500), with its token lookup written by hand."""

    def authenticate_credentials(self, token: bytes):
        """knox's check, step for step (an expired token is deleted and refused, the digest
        compared in constant time, ``AUTO_REFRESH`` honoured, an inactive user refused), on
        ``_TOKEN_SQL``: one statement, as knox's ``select_related`` query was."""
        try:
            text = token.decode("utf-8")
        except (UnicodeDecodeError, binascii.Error) as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        with prepared_cursor() as cursor:
            cursor.execute(_TOKEN_SQL, [text[: CONSTANTS.TOKEN_KEY_LENGTH]])
            rows = cursor.fetchall()
        for row in rows:
            auth_token = row_model(AuthToken, row)
            auth_token.user = row_model(User, row, len(AuthToken._meta.concrete_fields))
            if row[-1] is not None:
                # Where ModelBackend keeps the permissions it loaded: has_perm answers from it.
                auth_token.user._perm_cache = set(row[-1])
            if self._cleanup_token(auth_token):
                continue
            try:
                digest = hash_token(text)
            except (TypeError, binascii.Error) as exc:
                raise exceptions.AuthenticationFailed("Invalid token.") from exc
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed("Invalid token.")

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


class PermissionBackend(ModelBackend):
    """Django's ``ModelBackend`` (passwords, permissions), except that ``has_perm`` on a user
    whose permissions are not loaded yet asks for that one permission in one statement.

    Each API request has a fresh user, so ModelBackend's per-user cache never served a second
    question: every staff request paid two queries (user and group permissions, all of them)
    for one answer. The answer is the same: an active user holding ``app_label.codename``
    directly or through a group; superusers and object permissions go to ModelBackend, and a
    user whose permissions are loaded (the admin asks many questions; a staff member's token
    lookup brings them) is answered from them.
    """

    def has_perm(self, user_obj, perm: str, obj=None) -> bool:
        if (
            obj is not None
            or not user_obj.is_active
            or user_obj.is_superuser
            or user_obj.is_anonymous
            or hasattr(user_obj, "_perm_cache")
            or "." not in perm
        ):
            return super().has_perm(user_obj, perm, obj)
        with connection.cursor() as cursor:
            cursor.execute(_PERMISSION_HELD_SQL, {"perm": perm, "user_id": user_obj.pk})
            return bool(cursor.fetchone()[0])
