"""Staff roles as Django groups (see users/roles.py), and the end of plain-text tokens.

The groups' permissions are a frozen copy of ``users.roles.STAFF_ROLES`` as of this migration
(a later change to the roles needs its own migration). Permissions are normally created after
all migrations ran (post_migrate); they are created here first so the groups can hold them.

DRF's authtoken table kept every token in plain text; tokens are now django-rest-knox's
(hashed, expiring), so the old table is dropped: every client signs in again once.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

STAFF_ROLES = {
    "resolvers": (
        "challenges.resolve_challenge",
        "challenges.cancel_challenge",
        "challenges.view_challenge",
        "challenges.view_stake",
        "payouts.view_payoutjob",
    ),
    "treasury": (
        "ledger.add_deposit",
        "ledger.view_deposit",
        "ledger.view_account",
        "ledger.view_transfer",
    ),
    "operators": (
        "payouts.view_payoutjob",
        "payouts.view_payoutentry",
        "payouts.pause_payoutjob",
        "payouts.resume_payoutjob",
        "payouts.cancel_payoutjob",
        "payouts.retry_payoutjob",
        "core.view_deadletter",
        "core.replay_deadletter",
        "core.view_auditentry",
        "challenges.view_challenge",
        "notifications.view_notification",
        "notifications.change_notification",
    ),
}


def create_roles(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in STAFF_ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=STAFF_ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("challenges", "0005_staff_permissions"),
        ("core", "0002_replay_permission"),
        ("ledger", "0003_deposit"),
        ("payouts", "0010_job_control_permissions"),
        ("notifications", "0003_outcome_kinds"),
    ]

    operations = [
        migrations.RunPython(create_roles, remove_roles),
        # Tokens in plain text cannot be turned into hashes: they go (reversing keeps them gone).
        migrations.RunSQL("DROP TABLE IF EXISTS authtoken_token", migrations.RunSQL.noop),
    ]
