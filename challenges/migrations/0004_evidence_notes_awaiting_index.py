"""Evidence, staff notes and the resolution note on challenges; an index for the console's
"awaiting resolution" figures."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("challenges", "0003_escrow_in_ledger"),
    ]

    operations = [
        migrations.AddField(
            model_name="challenge",
            name="evidence",
            field=models.TextField(blank=True, default="", db_default=""),
        ),
        migrations.AddField(
            model_name="challenge",
            name="admin_notes",
            field=models.TextField(blank=True, default="", db_default=""),
        ),
        migrations.AddField(
            model_name="challenge",
            name="resolution_note",
            field=models.TextField(blank=True, default="", db_default=""),
        ),
        migrations.AddIndex(
            model_name="challenge",
            index=models.Index(
                condition=models.Q(("status", "pending_admin")),
                fields=["due_date"],
                name="challenge_awaiting_idx",
            ),
        ),
    ]
