# Every sweep that moves a challenge to staff, and every staff alert, notifies each active staff
# user (``u.is_staff AND u.is_active`` in ``challenges.services`` and ``notifications.services``).
# Without an index that is a scan of every user, each minute a challenge falls due: at a million
# users (three of them staff), 42 ms on both cores of a two-core machine. This index holds the
# staff only: the same lookup took 0.006 ms, and a user who is not staff costs it nothing (not
# even an entry). Built on that table in under a second.
#
# ``auth_user`` belongs to Django's auth app, whose model state this project does not change:
# the index is SQL only. Not atomic, so that it is built CONCURRENTLY and sign-ups keep going
# while a large table is indexed; IF NOT EXISTS / IF EXISTS make a repeat harmless.

from django.db import migrations

INDEX = "auth_user_active_staff_idx"


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("users", "0001_staff_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunSQL(
            sql=(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{INDEX}" ON "auth_user" ("id") '
                "WHERE is_staff AND is_active"
            ),
            reverse_sql=f'DROP INDEX CONCURRENTLY IF EXISTS "{INDEX}"',
        ),
    ]
