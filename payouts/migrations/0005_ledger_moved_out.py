"""Account and Transfer now belong to the ``ledger`` app (see ledger 0001): dropped from this
app's state only; their tables stay, owned by the ledger."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0004_hot_path_indexes"),
        ("ledger", "0001_initial"),
        ("challenges", "0003_escrow_in_ledger"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(model_name="transfer", name="debit_account"),
                migrations.RemoveField(model_name="transfer", name="credit_account"),
                migrations.DeleteModel(name="Account"),
                migrations.DeleteModel(name="Transfer"),
            ],
        ),
    ]
