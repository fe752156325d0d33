# Deadline warnings record whom they told (``DeadlineWarning``) instead of giving every row a
# dedup key. A challenge inside a warning window at the upgrade was warned by the previous
# release through keys: it gets its mark here, through the highest stake whose user has that
# warning, so the first scan of this release does not warn its participants again. Found by
# index: the open challenges due within the hour, their stakers and each one's notifications.

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models


MARK_WARNED = """
INSERT INTO challenges_deadlinewarning (challenge_id, kind, last_stake_id)
SELECT c.id, k.kind,
       coalesce((SELECT max(s.id) FROM challenges_stake AS s
                 WHERE s.challenge_id = c.id AND EXISTS (
                     SELECT FROM notifications_notification AS n
                     WHERE n.user_id = s.user_id AND n.challenge_id = c.id AND n.kind = k.kind)),
                0)
FROM challenges_challenge AS c
CROSS JOIN (VALUES ('deadline_1h'), ('deadline_10m')) AS k (kind)
WHERE c.status IN ('pending', 'active') AND c.due_date > now()
  AND c.due_date <= now() + interval '1 hour'
  AND EXISTS (SELECT FROM notifications_notification AS n
              WHERE n.user_id = c.challenger_id AND n.challenge_id = c.id AND n.kind = k.kind)
ON CONFLICT DO NOTHING
"""


class Migration(migrations.Migration):

    dependencies = [
        ('challenges', '0007_stake_challenge_index_dropped'),
        ('notifications', '0001_initial'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeadlineWarning',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('deadline_1h', 'Deadline 1H'), ('deadline_10m', 'Deadline 10M')], max_length=16)),
                ('last_stake_id', models.BigIntegerField(blank=True, null=True)),
                ('created_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('challenge', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='challenges.challenge')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('challenge', 'kind'), name='deadline_warning_once')],
            },
        ),
        migrations.RunSQL(sql=MARK_WARNED, reverse_sql=migrations.RunSQL.noop),
    ]
