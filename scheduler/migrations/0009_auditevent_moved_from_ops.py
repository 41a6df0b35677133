"""The audit trail moves from ops to the scheduler, whose services write it: state only.

The table keeps its name (`ops_auditevent`, `Meta.db_table`) and every row; ops' migration 0006
drops the model from ops' state without touching the table. The content type is renamed in place,
so permissions granted on it (view_auditevent) and admin log entries keep pointing at it.

Also: the offset field's validator is `scheduler.validators.validate_offset` (one home for the
0..59 rule); no SQL.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import scheduler.validators


def content_type_to_scheduler(apps, schema_editor):
    _move_content_type(apps, schema_editor.connection.alias, "ops", "scheduler")


def content_type_to_ops(apps, schema_editor):
    _move_content_type(apps, schema_editor.connection.alias, "scheduler", "ops")


def _move_content_type(apps, db, old, new):
    """The old app's content type becomes the new app's, keeping its id (and so its permissions,
    their grants and admin log entries). One the new app already has is a fresh one Django made
    after a rollback of this migration: it gives way (its permissions go with it; the groups are
    re-synced after every migrate)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(db).filter(model="auditevent")
    if not types.filter(app_label=old).exists():
        return  # a new database: Django creates the content type after migrating
    types.filter(app_label=new).delete()
    types.filter(app_label=old).update(app_label=new)


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('ops', '0005_outage_incidents'),
        ('scheduler', '0008_jobrun_skipped_disabled_superseded_catchupstart'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('username', models.CharField(blank=True, help_text='Copied at the time.', max_length=150)),
                        ('ip', models.GenericIPAddressField(blank=True, help_text='Client address of the request that made the change.', null=True)),
                        ('via', models.CharField(help_text='admin, api, cli or system.', max_length=20)),
                        ('action', models.CharField(choices=[('schedule.create', 'schedule created'), ('schedule.update', 'schedule changed'), ('schedule.delete', 'schedule deleted'), ('schedule.enable', 'schedule enabled'), ('schedule.disable', 'schedule disabled'), ('crontab.save', 'crontab saved'), ('crontab.delete', 'crontab deleted'), ('job.run', 'job run by hand'), ('run.retry', 'failed run retried'), ('incident.close', 'alert incident closed by hand')], max_length=30)),
                        ('object_type', models.CharField(help_text='e.g. schedule, crontab, job, run.', max_length=50)),
                        ('object_id', models.CharField(blank=True, max_length=100)),
                        ('object_repr', models.CharField(help_text='e.g. the job name.', max_length=200)),
                        ('before', models.JSONField(blank=True, help_text='State before the change.', null=True)),
                        ('after', models.JSONField(blank=True, help_text='State after the change.', null=True)),
                        ('reason', models.CharField(blank=True, max_length=255)),
                        ('user', models.ForeignKey(blank=True, help_text='Who acted (empty for the system or a deleted user; see username).', null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'verbose_name': 'audit event',
                        'db_table': 'ops_auditevent',
                        'ordering': ['-created_at', '-id'],
                        'indexes': [models.Index(fields=['object_type', 'object_repr', '-created_at'], name='ops_auditev_object__1a94fa_idx')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_type_to_scheduler, content_type_to_ops),
        migrations.AlterField(
            model_name='jobschedule',
            name='offset_seconds',
            field=models.PositiveSmallIntegerField(default=0, help_text='Seconds after the minute boundary at which this job starts (0-59). Jobs that share a minute start apart, so give each job its own second; JOB_STAGGER_ENABLED=0 sets every offset to 0.', validators=[scheduler.validators.validate_offset]),
        ),
    ]
