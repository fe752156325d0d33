"""The ledger moves out of ``payouts`` into its own app: Django's state only.

The tables, their rows, constraints, indexes and the immutability trigger stay exactly where
``payouts`` created them (the models keep ``db_table``), so this migration moves no row and
takes no lock on a table of any size. ``payouts`` 0005 drops the models from its own state and
``challenges`` 0003 points the escrow at the new home. The content types (and so the
permissions and admin history of accounts and transfers) follow the models.
"""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models

MOVED = ("account", "transfer")


def content_types_follow(apps, schema_editor, *, source="payouts", target="ledger"):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label=source, model__in=MOVED).update(app_label=target)


def content_types_return(apps, schema_editor):
    content_types_follow(apps, schema_editor, source="ledger", target="payouts")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("payouts", "0004_hot_path_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
            migrations.CreateModel(
                name='Account',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('kind', models.CharField(choices=[('world', 'World'), ('user_wallet', 'User Wallet'), ('challenge_escrow', 'Challenge Escrow'), ('platform_fees', 'Platform Fees'), ('stripe_clearing', 'Stripe Clearing')], max_length=32)),
                    ('currency', models.CharField(max_length=16)),
                    ('balance', models.BigIntegerField(default=0)),
                    ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                    ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='accounts', to=settings.AUTH_USER_MODEL)),
                ],
                options={
                    'db_table': 'payouts_account',
                },
            ),
            migrations.CreateModel(
                name='Transfer',
                fields=[
                    ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                    ('amount', models.BigIntegerField()),
                    ('kind', models.CharField(choices=[('deposit', 'Deposit'), ('stake', 'Stake'), ('payout', 'Payout'), ('refund', 'Refund'), ('fee', 'Fee'), ('stripe_payout', 'Stripe Payout'), ('reversal', 'Reversal'), ('transfer', 'Transfer')], max_length=32)),
                    ('idempotency_key', models.CharField(db_collation='C', max_length=128)),
                    ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                    ('credit_account', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='credits', to='ledger.account')),
                    ('debit_account', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='debits', to='ledger.account')),
                ],
                options={
                    'db_table': 'payouts_transfer',
                },
            ),
            migrations.AddConstraint(
                model_name='account',
                constraint=models.CheckConstraint(condition=models.Q(('balance__gte', 0), ('kind', 'world'), _connector='OR'), name='account_balance_non_negative'),
            ),
            migrations.AddConstraint(
                model_name='account',
                constraint=models.CheckConstraint(condition=models.Q(models.Q(('kind', 'user_wallet'), ('user__isnull', False)), models.Q(models.Q(('kind', 'user_wallet'), _negated=True), ('user__isnull', True)), _connector='OR'), name='account_user_only_on_wallets'),
            ),
            migrations.AddConstraint(
                model_name='account',
                constraint=models.UniqueConstraint(condition=models.Q(('kind', 'user_wallet')), fields=('user', 'currency'), name='account_one_wallet_per_user'),
            ),
            migrations.AddConstraint(
                model_name='account',
                constraint=models.UniqueConstraint(condition=models.Q(('kind__in', ['world', 'platform_fees', 'stripe_clearing'])), fields=('kind', 'currency'), name='account_one_system_account_per_kind'),
            ),
            migrations.AddConstraint(
                model_name='transfer',
                constraint=models.UniqueConstraint(fields=('idempotency_key',), name='transfer_idempotency_key'),
            ),
            migrations.AddConstraint(
                model_name='transfer',
                constraint=models.CheckConstraint(condition=models.Q(('amount__gt', 0)), name='transfer_amount_positive'),
            ),
            migrations.AddConstraint(
                model_name='transfer',
                constraint=models.CheckConstraint(condition=models.Q(('debit_account', models.F('credit_account')), _negated=True), name='transfer_distinct_accounts'),
            ),
            ],
        ),
        migrations.RunPython(content_types_follow, content_types_return),
    ]
