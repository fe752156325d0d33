"""PermissionBackend answers has_perm in one statement, and always as ModelBackend would."""

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission

from users.auth import PermissionBackend
from users.services import User

PERMS = ("challenges.resolve_challenge", "ledger.add_deposit", "payouts.pause_payoutjob", "nope")


def _fresh(user: User) -> User:
    # A request's user: nothing cached on it yet.
    return User.objects.get(pk=user.pk)


@pytest.mark.django_db
def test_it_agrees_with_model_backend_directly_through_groups_and_without(make_user):
    # Given a user holding one permission directly, another through a group, and one without
    direct, grouped, bare = make_user(staff=True), make_user(staff=True), make_user(staff=True)
    direct.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    group = Group.objects.create(name="test-depositors")
    group.permissions.add(Permission.objects.get(codename="add_deposit"))
    grouped.groups.add(group)
    inactive = make_user(staff=True)
    inactive.user_permissions.add(Permission.objects.get(codename="resolve_challenge"))
    inactive.is_active = False
    inactive.save()
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
