"""PermissionBackend answers has_perm in one statement, a staff member's token lookup brings
every permission they hold, and the answers are always ModelBackend's."""

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission

from users.auth import PermissionBackend, TokenAuthentication
from users.services import User, token_create

PERMS = ("challenges.resolve_challenge", "ledger.add_deposit", "payouts.pause_payoutjob", "nope")


def _fresh(user: User) -> User:
    # A request's user: nothing cached on it yet.
    return User.objects.get(pk=user.pk)


def _users_with_and_without_permissions(make_user) -> tuple[User, User, User, User]:
    """Staff holding one permission directly, another through a group, one without, and an
    inactive one holding a permission directly."""
    direct, grouped, bare = make_user(staff=True), make_user(staff=True), make_user(staff=True)
    direct.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    group = Group.objects.create(name="test-depositors")
    group.permissions.add(Permission.objects.get(codename="add_deposit"))
    grouped.groups.add(group)
    inactive = make_user(staff=True)
    inactive.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    inactive.is_active = False
    inactive.save()
    return direct, grouped, bare, inactive


@pytest.mark.django_db
def test_it_agrees_with_model_backend_directly_through_groups_and_without(make_user):
    # Given a user holding one permission directly, another through a group, and one without
    direct, grouped, bare, inactive = _users_with_and_without_permissions(make_user)
    # Then every answer is ModelBackend's
    for user in (direct, grouped, bare, inactive):
        for perm in PERMS:
            expected = ModelBackend().has_perm(_fresh(user), perm)
            assert PermissionBackend().has_perm(_fresh(user), perm) is expected, (user, perm)
    assert PermissionBackend().has_perm(_fresh(direct), "challenges.resolve_challenge")
    assert PermissionBackend().has_perm(_fresh(grouped), "ledger.add_deposit")
    assert not PermissionBackend().has_perm(_fresh(bare), "ledger.add_deposit")
    assert not PermissionBackend().has_perm(_fresh(inactive), "challenges.resolve_challenge")


@pytest.mark.django_db
def test_one_statement_per_question(make_user, django_assert_num_queries):
    user = make_user(staff=True)
    user.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    user = _fresh(user)
    with django_assert_num_queries(1):
        assert user.has_perm("challenges.resolve_challenge")


def _token_user(user: User) -> User:
    """The user a request presenting a fresh token of ``user`` is authenticated as."""
    token, _ = token_create(user=user)
    authenticated, _ = TokenAuthentication().authenticate_credentials(token.encode())
    return authenticated


@pytest.mark.django_db
def test_a_staff_members_token_lookup_brings_their_permissions(
    make_user, django_assert_num_queries
):
    # Given staff with and without permissions (the inactive one cannot sign in by token)
    direct, grouped, bare, _ = _users_with_and_without_permissions(make_user)
    for user in (direct, grouped, bare):
        authenticated = _token_user(user)
        # Then each question is answered with no query, as ModelBackend answers it
        with django_assert_num_queries(0):
            answers = {perm: authenticated.has_perm(perm) for perm in PERMS}
        assert answers == {perm: ModelBackend().has_perm(_fresh(user), perm) for perm in PERMS}
    # And a permission taken away counts from the next request on
    Group.objects.get(name="test-depositors").permissions.clear()
    assert not _token_user(grouped).has_perm("ledger.add_deposit")


@pytest.mark.django_db
def test_only_staff_get_their_permissions_with_the_token_lookup(make_user):
    # Given a user who is not staff, holding a permission anyway, and a superuser
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    superuser = make_user(staff=True)
    superuser.is_superuser = True
    superuser.save()
    # Then neither has permissions loaded: the non-staff are never asked (staff actions are
    # refused before), and a superuser holds every permission without a lookup
    assert not hasattr(_token_user(user), "_perm_cache")
    assert not hasattr(_token_user(superuser), "_perm_cache")
    assert _token_user(user).has_perm("challenges.resolve_challenge")
    assert _token_user(superuser).has_perm("payouts.pause_payoutjob")
