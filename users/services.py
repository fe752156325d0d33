"""Users: creation opens the wallet in the same transaction, so no user is ever without one."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

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
