import threading

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from core.errors import InsufficientFunds, InvalidInput, NotFound
from ledger.models import Account, Transfer
from ledger.selectors import _CHECK_SQL as LEDGER_CHECK_SQL
from ledger.selectors import ledger_check, wallet_get
from ledger.services import (
    TransferSpec,
    account_create,
    system_account_id,
    transfer_post,
    transfers_post,
)
from tests.plans import plan_nodes


@pytest.fixture
def wallets(make_user):
    alice, bob = make_user("alice", balance=1_000), make_user("bob", balance=500)
    return wallet_get(user_id=alice.pk), wallet_get(user_id=bob.pk)


def test_database_rejects_negative_wallet_balance_written_with_update(wallets):
    alice, _ = wallets
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=alice.pk).update(balance=-1)
    alice.refresh_from_db()
    assert alice.balance == 1_000


def test_database_rejects_non_positive_transfer_amount(wallets):
    alice, bob = wallets
    for amount in (0, -5):
        with pytest.raises(IntegrityError), transaction.atomic():
            Transfer.objects.create(
                debit_account=alice,
                credit_account=bob,
                amount=amount,
                kind="transfer",
                idempotency_key=f"bad:{amount}",
            )


def test_transfers_are_immutable(wallets):
    alice, bob = wallets
    transfer_post(
        debit_account_id=alice.pk,
        credit_account_id=bob.pk,
        amount=10,
        kind="transfer",
        idempotency_key="t:1",
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Transfer.objects.filter(idempotency_key="t:1").update(amount=11)
    with pytest.raises(IntegrityError), transaction.atomic():
        Transfer.objects.filter(idempotency_key="t:1").delete()
    assert Transfer.objects.get(idempotency_key="t:1").amount == 10


def test_duplicate_idempotency_key_posts_nothing(wallets):
    alice, bob = wallets
    args = {
        "debit_account_id": alice.pk,
        "credit_account_id": bob.pk,
        "amount": 100,
        "kind": "transfer",
        "idempotency_key": "once",
    }
    assert transfer_post(**args) is True
    assert transfer_post(**args) is False
    alice.refresh_from_db(), bob.refresh_from_db()
    assert (alice.balance, bob.balance) == (900, 600)
    assert Transfer.objects.filter(idempotency_key="once").count() == 1


def test_batch_posting_is_set_based_and_skips_known_keys(wallets, django_assert_num_queries):
    alice, bob = wallets
    specs = [TransferSpec(alice.pk, bob.pk, 1, "transfer", f"b:{i}") for i in range(300)]
    # Savepoint, lock, post, release: the same four statements for 300 transfers as for one.
    with django_assert_num_queries(4):
        assert transfers_post(transfers=specs) == 300
    assert (
        transfers_post(
            transfers=[*specs[:10], TransferSpec(bob.pk, alice.pk, 5, "transfer", "new")]
        )
        == 1
    )
    alice.refresh_from_db(), bob.refresh_from_db()
    assert (alice.balance, bob.balance) == (1_000 - 300 + 5, 500 + 300 - 5)


def test_overdraft_raises_and_changes_nothing(wallets):
    alice, bob = wallets
    specs = [
        TransferSpec(alice.pk, bob.pk, 400, "transfer", "ok-part"),
        TransferSpec(alice.pk, bob.pk, 700, "transfer", "too-much"),
    ]
    with pytest.raises(InsufficientFunds):
        transfers_post(transfers=specs)
    assert not Transfer.objects.filter(idempotency_key__in=["ok-part", "too-much"]).exists()
    alice.refresh_from_db()
    assert alice.balance == 1_000


def test_posting_to_an_account_that_does_not_exist_is_refused_and_posts_nothing(wallets):
    alice, _ = wallets
    missing = Account.objects.order_by("-id").values_list("id", flat=True).first() + 1_000
    specs = [
        TransferSpec(alice.pk, missing, 10, "transfer", "nowhere"),
        TransferSpec(missing, alice.pk, 10, "transfer", "from-nowhere"),
    ]
    for spec in specs:
        with pytest.raises(NotFound) as refused:
            transfers_post(transfers=[spec])
        assert refused.value.code == "account_not_found"
    assert not Transfer.objects.filter(idempotency_key__in=["nowhere", "from-nowhere"]).exists()
    alice.refresh_from_db()
    assert alice.balance == 1_000


def test_an_account_that_transfers_name_cannot_be_deleted_alone_or_in_bulk(wallets):
    alice, bob = wallets
    unused = account_create(kind=Account.Kind.CHALLENGE_ESCROW)
    spare = account_create(kind=Account.Kind.CHALLENGE_ESCROW)
    for named in ([bob.pk], [unused.pk, alice.pk]):
        with (
            pytest.raises(IntegrityError, match="has transfers"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("DELETE FROM payouts_account WHERE id = ANY(%s)", [named])
    assert Account.objects.filter(pk__in=[alice.pk, bob.pk, unused.pk]).count() == 3
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM payouts_account WHERE id = ANY(%s)", [[unused.pk, spare.pk]])
        assert cursor.rowcount == 2


def test_ledger_check_names_a_transfer_to_an_account_that_does_not_exist(wallets):
    alice, _ = wallets
    missing = Account.objects.order_by("-id").values_list("id", flat=True).first() + 1_000
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO payouts_transfer "
                "(debit_account_id, credit_account_id, amount, kind, idempotency_key) "
                "VALUES (%s, %s, 5, 'transfer', 'orphan')",
                [alice.pk, missing],
            )
            cursor.execute(
                "UPDATE payouts_account SET balance = balance - 5 WHERE id = %s", [alice.pk]
            )
        report = ledger_check()
        # Transfers are immutable: take it back with the whole transaction.
        transaction.set_rollback(True)
    assert f"transfers name account {missing}, which does not exist" in report.violations
    assert ledger_check().ok


@pytest.mark.parametrize("amount", [0, -1, 1.5, 2.0, "10", True, None, 10**16])
def test_invalid_amounts_are_refused_before_the_database(wallets, amount):
    alice, bob = wallets
    with pytest.raises(InvalidInput):
        transfer_post(
            debit_account_id=alice.pk,
            credit_account_id=bob.pk,
            amount=amount,
            kind="transfer",
            idempotency_key="x",
        )


def test_ledger_check_finds_a_tampered_balance_and_the_command_exits_1(wallets, capsys):
    alice, _ = wallets
    assert ledger_check().ok
    with connection.cursor() as cursor:
        cursor.execute("UPDATE payouts_account SET balance = balance + 7 WHERE id = %s", [alice.pk])
    report = ledger_check()
    assert not report.ok
    assert any("sum of all balances is 7" in v for v in report.violations)
    assert any(f"account {alice.pk}" in v for v in report.violations)
    with pytest.raises(SystemExit) as exit_info:
        call_command("ledger_check")
    assert exit_info.value.code == 1
    # Put it back so the suite's own invariant check passes.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE payouts_account SET balance = balance - 7 WHERE id = %s", [alice.pk])
    call_command("ledger_check")
    assert "ledger_check: ok" in capsys.readouterr().out


def _accounts_in_a_ring(cursor, count: int) -> None:
    """``count`` escrow accounts, each paying the next one 1 unit: balances stay 0."""
    cursor.execute(
        "INSERT INTO payouts_account (kind, currency, balance) "
        "SELECT 'challenge_escrow', 'coin', 0 FROM generate_series(1, %s)",
        [count],
    )
    cursor.execute(
        "INSERT INTO payouts_transfer "
        "(debit_account_id, credit_account_id, amount, kind, idempotency_key) "
        "SELECT id, coalesce(lead(id) OVER (ORDER BY id), min(id) OVER ()), 1, 'transfer', "
        "'ring:' || id FROM payouts_account WHERE kind = 'challenge_escrow' ORDER BY id"
    )


# Transactional: ANALYZE writes the table's size in place, past any rollback; the flush at the
# end (a TRUNCATE) resets it, so no later test is planned with these statistics.
@pytest.mark.django_db(transaction=True)
def test_the_full_check_stays_one_pass_when_the_statistics_say_the_ledger_is_empty():
    # Given statistics taken while the ledger's tables held only rolled-back rows (as after
    # scenarios that roll back), then thousands of accounts and transfers
    with connection.cursor() as cursor:
        with transaction.atomic():
            _accounts_in_a_ring(cursor, 2_000)
            transaction.set_rollback(True)
        cursor.execute("ANALYZE payouts_account")
        cursor.execute("ANALYZE payouts_transfer")
        _accounts_in_a_ring(cursor, 3_000)
    accounts = Account.objects.count()
    # When the full check is planned, and run
    plan = plan_nodes(LEDGER_CHECK_SQL)
    report = ledger_check()
    # Then the planner did believe the tables nearly empty, yet planned no join (a nested loop
    # of the accounts over their sums reads accounts x accounts rows), and the check holds
    believed = [n["Plan Rows"] for n in plan if n.get("Relation Name") == "payouts_account"]
    assert believed
    assert max(believed) < accounts / 100, (believed, accounts)
    joins = [n["Node Type"] for n in plan if "Join" in n["Node Type"] or "Loop" in n["Node Type"]]
    assert joins == []
    assert report.ok, report.violations
    assert (report.accounts, report.transfers) == (accounts, Transfer.objects.count())


@pytest.mark.django_db(transaction=True)
def test_eight_threads_moving_money_between_the_same_accounts(make_user):
    users = [make_user(f"t{i}", balance=10_000) for i in range(3)]
    ids = [wallet_get(user_id=u.pk).pk for u in users]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                a, b = ids[(n + i) % 3], ids[(n + i + 1 + n % 2) % 3]
                transfer_post(
                    debit_account_id=a,
                    credit_account_id=b,
                    amount=1 + (i % 7),
                    kind="transfer",
                    idempotency_key=f"thr:{n}:{i}",
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = ledger_check()
    assert report.ok, report.violations
    assert report.total_balance == 0
    assert Transfer.objects.filter(kind="transfer").count() == 400
    assert sum(Account.objects.filter(pk__in=ids).values_list("balance", flat=True)) == 30_000
    assert Account.objects.get(pk=system_account_id("world")).balance == -30_000
