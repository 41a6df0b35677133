"""Rows a games batch job could not process (`RowFailure`), and the outbox's delivery order.

`RowFailure` records a failed row (session, badge, pool) with its attempts and cleaned error, so
a poisoned row is retried after healthy work and parked at its limit instead of wedging a job.
The pending-notification index gains `id`: delivery reads `ORDER BY next_attempt_at, id LIMIT
200`, and without `id` every batch sorted all rows due at one moment (100,000 queued by one
badge run: ~690 rows/s, now ~2,200 here). Both are small: a new empty table, and an index on
pending rows only (the outbox's backlog, not its history).
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('games', '0007_void_and_requeue_permissions'),
    ]

    operations = [
        migrations.CreateModel(
            name='RowFailure',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('job', models.CharField(help_text="The job that failed, e.g. 'cleanup'.", max_length=40)),
                ('row_id', models.BigIntegerField(help_text="The row in the job's own table: a session (stuck-session-finisher, cleanup), a badge (badge-auto-unlock), a pool (prediction-matcher, prize-pool-finalisation).")),
                ('attempts', models.PositiveIntegerField(default=0, help_text='Failed attempts so far.')),
                ('last_error', models.TextField(blank=True, default='')),
                ('first_failed_at', models.DateTimeField()),
                ('last_failed_at', models.DateTimeField()),
            ],
        ),
        migrations.RemoveIndex(
            model_name='notification',
            name='notification_pending_next',
        ),
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['next_attempt_at', 'id'], name='notification_pending_key'),
        ),
        migrations.AddConstraint(
            model_name='rowfailure',
            constraint=models.UniqueConstraint(fields=('job', 'row_id'), name='row_failure_one_per_row'),
        ),
    ]
