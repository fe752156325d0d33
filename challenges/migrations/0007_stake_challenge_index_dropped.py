# The stake's own index on its challenge duplicated the first column of two others (the unique
# (challenge, user) and stake_side_idx), which serve every lookup by challenge; each stake
# wrote an entry into all three. Dropped CONCURRENTLY (so stakes keep arriving meanwhile),
# by the name Django gave it in 0001; IF EXISTS makes a repeat harmless.

import django.db.models.deletion
from django.db import migrations, models

INDEX = "challenges_stake_challenge_id_9faad579"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("challenges", "0006_partial_user_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="stake",
                    name="challenge",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="stakes",
                        to="challenges.challenge",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"',
                    reverse_sql=(
                        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" '
                        'ON "challenges_stake" ("challenge_id")'
                    ),
                ),
            ],
        ),
    ]
