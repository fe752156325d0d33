"""Moving the ledger out of ``payouts`` loses nothing: a database at the schema before the move,
with money in it, migrates forward with every balance and transfer unchanged."""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from challenges.models import Challenge
from ledger.models import Account, Transfer
from ledger.selectors import ledger_check

LAST_BEFORE_THE_MOVE = [("payouts", "0004_hot_path_indexes"), ("challenges", "0002_beat_schedule")]


def _money_at_the_old_schema(apps) -> int:
    """Two funded wallets and a stake in a challenge's escrow, written with the models as
    they were (``payouts.Account``, ``payouts.Transfer``); returns the challenge id."""
    user_model = apps.get_model("auth", "User")
    account_model = apps.get_model("payouts", "Account")
    transfer_model = apps.get_model("payouts", "Transfer")
    alice = user_model.objects.create(username="alice")
    bob = user_model.objects.create(username="bob")
    world = account_model.objects.create(kind="world", currency="COIN", balance=-1_500)
    wallet_a = account_model.objects.create(
        kind="user_wallet", user=alice, currency="COIN", balance=700
    )
    account_model.objects.create(kind="user_wallet", user=bob, currency="COIN", balance=500)
    escrow = account_model.objects.create(kind="challenge_escrow", currency="COIN", balance=300)
    wallet_b = account_model.objects.get(user=bob)
    for debit, credit, amount, kind, key in [
        (world, wallet_a, 1_000, "deposit", "deposit:a"),
        (world, wallet_b, 500, "deposit", "deposit:b"),
        (wallet_a, escrow, 300, "stake", "stake:1"),
    ]:
        transfer_model.objects.create(
            debit_account=debit, credit_account=credit, amount=amount, kind=kind,
            idempotency_key=key,
        )  # fmt: skip
    challenge = apps.get_model("challenges", "Challenge").objects.create(
        title="Old money",
        challenger=alice,
        escrow=escrow,
        due_date=timezone.now() + timedelta(days=1),
        yes_total=300,
        yes_count=1,
    )
    return challenge.pk


def _snapshot() -> tuple[list, list]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, kind, user_id, currency, balance FROM payouts_account ORDER BY id"
        )
        accounts = cursor.fetchall()
        cursor.execute(
            "SELECT id, debit_account_id, credit_account_id, amount, kind, idempotency_key"
            " FROM payouts_transfer ORDER BY id"
        )
        return accounts, cursor.fetchall()


@pytest.mark.django_db(transaction=True)
def test_the_move_keeps_every_balance_and_transfer():
    # Given a database at the schema before the move, with money in it
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([*LAST_BEFORE_THE_MOVE, ("ledger", None)])
    old_apps = executor.loader.project_state(LAST_BEFORE_THE_MOVE).apps
    challenge_id = _money_at_the_old_schema(old_apps)
    before = _snapshot()

    # When it migrates to today's schema
    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    # Then every row is where it was, readable through the ledger app's models
    assert _snapshot() == before
    accounts, transfers = before
    assert list(Account.objects.order_by("id").values_list("id", "balance")) == [
        (row[0], row[4]) for row in accounts
    ]
    assert Transfer.objects.count() == len(transfers) == 3
    escrow = Challenge.objects.get(pk=challenge_id).escrow
    assert (escrow.kind, escrow.balance) == ("challenge_escrow", 300)
    report = ledger_check()
    assert report.ok, report.violations
    assert (report.accounts, report.transfers, report.total_balance) == (4, 3, 0)
    # the database rules came along: transfers stay immutable
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        Transfer.objects.filter(idempotency_key="stake:1").update(amount=1)
    assert ContentType.objects.get_for_model(Account).app_label == "ledger"
