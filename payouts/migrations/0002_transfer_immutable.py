"""Ledger rows are immutable: the database itself refuses UPDATE and DELETE of a transfer.

TRUNCATE (test teardown) is a table-level operation and is not affected.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION payouts_transfer_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger transfers are immutable (% refused); post a correcting transfer', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER payouts_transfer_immutable
    BEFORE UPDATE OR DELETE ON payouts_transfer
    FOR EACH ROW EXECUTE FUNCTION payouts_transfer_immutable();
"""

BACKWARD = """
DROP TRIGGER payouts_transfer_immutable ON payouts_transfer;
DROP FUNCTION payouts_transfer_immutable();
"""


class Migration(migrations.Migration):
    dependencies = [("payouts", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
