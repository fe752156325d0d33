"""The incremental ledger check: it reads only the transfers after its checkpoint, still sees a
wrong balance on any account (touched since or not), and never moves its checkpoint past a
transfer that a transaction still open may yet commit."""

import threading

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from ledger.models import Checkpoint
from ledger.selectors import ledger_check, wallet_get
from ledger.services import transfer_post


@pytest.fixture
def wallets(make_user):
    users = [make_user(f"w{i}", balance=1_000) for i in range(4)]
    return [wallet_get(user_id=u.pk).pk for u in users]


def move(debit: int, credit: int, amount: int, key: str) -> None:
    transfer_post(
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        kind="transfer",
        idempotency_key=key,
    )


def tamper(account_id: int, delta: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE payouts_account SET balance = balance + %s WHERE id = %s", [delta, account_id]
        )


@pytest.mark.django_db
def test_incremental_reads_only_the_transfers_after_its_checkpoint(wallets):
    # Given a first incremental run, which reads everything and sets the checkpoint
    first = ledger_check(incremental=True)
    assert first.ok, first.violations
    assert first.mode == "incremental"
    assert first.transfers == 4  # the four deposits
    assert Checkpoint.objects.get().watermark == first.watermark > 0
    # When three more transfers are posted and it runs again
    for n in range(3):
        move(wallets[n], wallets[n + 1], 10 + n, f"inc:{n}")
    second = ledger_check(incremental=True)
    # Then it read those three only, agrees with the full check, and moved its checkpoint
    assert second.ok, second.violations
    assert second.transfers == 3
    assert second.watermark > first.watermark
    assert ledger_check().ok
    assert ledger_check(incremental=True).transfers == 0


@pytest.mark.django_db
def test_incremental_sees_money_moved_without_a_transfer_on_accounts_it_did_not_read(
    wallets, capsys
):
    # Given a checkpoint, then 5 moved from one wallet to another by a bare UPDATE (the sum
    # of all balances stays 0, and neither account has a transfer after the checkpoint)
    assert ledger_check(incremental=True).ok
    tamper(wallets[0], -5)
    tamper(wallets[1], +5)
    # When the incremental check runs, Then it fails, and the full check names both accounts
    report = ledger_check(incremental=True)
    assert not report.ok
    assert "differs from its credits - debits" in report.violations[0]
    full = ledger_check()
    assert sum(f"account {w} " in v for v in full.violations for w in wallets[:2]) == 2
    with pytest.raises(SystemExit):
        call_command("ledger_check", "--incremental")
    # (put it back so the suite's own check passes)
    tamper(wallets[0], +5)
    tamper(wallets[1], -5)
    call_command("ledger_check", "--incremental")
    assert "ledger_check: ok (incremental)" in capsys.readouterr().out


@pytest.mark.django_db
def test_incremental_sees_a_balance_that_breaks_the_sum(wallets):
    assert ledger_check(incremental=True).ok
    tamper(wallets[2], +7)
    report = ledger_check(incremental=True)
    assert "sum of all balances is 7, expected 0" in report.violations
    tamper(wallets[2], -7)


@pytest.mark.django_db(transaction=True)
def test_the_checkpoint_never_passes_a_transfer_still_being_committed(wallets):
    # Given a checkpoint, and a transaction that posted a transfer and has not committed
    assert ledger_check(incremental=True).ok
    posted, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_payment() -> None:
        try:
            with transaction.atomic():
                move(wallets[0], wallets[1], 25, "slow")
                posted.set()
                release.wait(30)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=slow_payment)
    thread.start()
    assert posted.wait(10)
    # ... while a later transfer commits (its id is higher than the open one's)
    move(wallets[2], wallets[3], 1, "quick")
    # When the check runs meanwhile, Then it passes but keeps its checkpoint where it was
    before = Checkpoint.objects.get().watermark
    during = ledger_check(incremental=True)
    assert during.ok, during.violations
    assert Checkpoint.objects.get().watermark == before
    # And once the slow transaction commits, the next run reads both transfers
    release.set()
    thread.join()
    after = ledger_check(incremental=True)
    assert after.ok, after.violations
    assert after.transfers == 2
    assert Checkpoint.objects.get().watermark > before
