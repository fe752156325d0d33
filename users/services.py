"""Users: creation opens the wallet in the same transaction, so no user is ever without one;
API tokens (issued, revoked) and password changes."""

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from knox.models import AuthToken

from core.errors import Conflict, InvalidInput
from ledger.services import wallet_create

User = get_user_model()


def user_create(
    *,
    username: str,
    password: str,
    is_staff: bool = False,
    is_superuser: bool = False,
    validate: bool = True,
):
    """Create a user and their wallet atomically.

    Raises ``Conflict(username_taken)`` for a taken name and ``InvalidInput(weak_password)``
    when the password fails Django's validators (skipped with ``validate=False`` for seeding).
    """
    if validate:
        try:
            validate_password(password, User(username=username))
        except ValidationError as exc:
            raise InvalidInput(" ".join(exc.messages), code="weak_password") from exc
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                username=username,
                password=password,
                is_staff=is_staff or is_superuser,
                is_superuser=is_superuser,
            )
            wallet_create(user_id=user.pk)
    except IntegrityError as exc:
        raise Conflict("This username is taken.", code="username_taken") from exc
    return user


def token_create(*, user: Any) -> tuple[str, datetime]:
    """Issue a new API token for ``user``; return it and its expiry.

    Only a hash is stored (django-rest-knox), so the token is shown this once. It expires
    after ``TOKEN_TTL`` seconds. The user's expired tokens are removed here, so they do not
    pile up.
    """
    AuthToken.objects.filter(user=user, expiry__lt=timezone.now()).delete()
    instance, token = AuthToken.objects.create(user=user)
    return token, instance.expiry


def token_revoke(*, token: AuthToken) -> None:
    """Revoke one token (logout): it stops working at once."""
    token.delete()


def tokens_revoke_all(*, user: Any) -> int:
    """Revoke every token of ``user`` (logout everywhere); return how many there were."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted


def password_change(*, user: Any, old_password: str, new_password: str) -> None:
    """Change the password and revoke every token of the user, in one transaction.

    Refuses a wrong ``old_password`` (``invalid_credentials``) and a new password Django's
    validators reject (``weak_password``). Sessions end too: Django ties them to the
    password's hash.
    """
    if not user.check_password(old_password):
        raise InvalidInput("The current password is wrong.", code="invalid_credentials")
    try:
        validate_password(new_password, user)
    except ValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), code="weak_password") from exc
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        tokens_revoke_all(user=user)
