"""Less work per payout (issue 16): no foreign-key check when a transfer is inserted.

PostgreSQL checks a foreign key with one query per inserted row, and the check locks the
account's row: a lock record in the WAL and a dirtied page per transfer. On a ledger batch of
10,000 payouts (proof.engine_limits' work per payout, 300,000 winners, two runs): 26-28 us of
database CPU and 2.1 lock records per payout with the constraints, 19-20 us and 1.1 without.
Every posting updates the balances of the accounts it names in the same statement, after
finding or locking them, so the insert side of the check cannot fail; the delete side is kept
by the trigger below, which reads the deleted rows once per statement (a cleanup deleting a
million accounts costs two index probes per row, not a trigger call each). Dropping a
constraint takes a short exclusive lock and reads no rows; the way back validates every
transfer again.
"""

import django.db.models.deletion
from django.db import migrations, models

FORWARD = """
CREATE FUNCTION ledger_accounts_keep_transfers() RETURNS trigger AS $$
DECLARE
    named bigint;
BEGIN
    SELECT g.id INTO named FROM gone AS g
    WHERE EXISTS (SELECT 1 FROM payouts_transfer AS t WHERE t.debit_account_id = g.id)
       OR EXISTS (SELECT 1 FROM payouts_transfer AS t WHERE t.credit_account_id = g.id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % has transfers and cannot be deleted', named
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_accounts_keep_transfers
    AFTER DELETE ON payouts_account
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_keep_transfers();
"""

BACKWARD = """
DROP TRIGGER ledger_accounts_keep_transfers ON payouts_account;
DROP FUNCTION ledger_accounts_keep_transfers();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_deposit")]

    operations = [
        migrations.AlterField(
            model_name="transfer",
            name="credit_account",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credits",
                to="ledger.account",
            ),
        ),
        migrations.AlterField(
            model_name="transfer",
            name="debit_account",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="debits",
                to="ledger.account",
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
