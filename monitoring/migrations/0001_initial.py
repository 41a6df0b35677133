"""Alert incidents and their notifications move from ops to monitoring, the domain that writes
them (alerts, outages, the watchdog): state only, as the audit trail's move (scheduler 0009).

The tables keep their names (`ops_incident`, `ops_alertdelivery`: `Meta.db_table`), their rows,
indexes and constraints; ops' migration 0008 drops the models from ops' state without touching
them. The content types are renamed in place, so the permissions on them (view_incident,
close_incident, view_metrics and the rest), their grants and admin log entries keep pointing at
them. `sqlmigrate monitoring 0001` and `sqlmigrate ops 0008` are no-ops.
"""

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("incident", "alertdelivery")


def content_types_to_monitoring(apps, schema_editor):
    _move_content_types(apps, schema_editor.connection.alias, "ops", "monitoring")


def content_types_to_ops(apps, schema_editor):
    _move_content_types(apps, schema_editor.connection.alias, "monitoring", "ops")


def _move_content_types(apps, db, old, new):
    """The old app's content types become the new app's, keeping their ids (and so their
    permissions, the grants of those and admin log entries). One the new app already has is a
    fresh one Django made after a rollback of this migration: it gives way (its permissions go with
    it; the groups are re-synced after every migrate)."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        types = ContentType.objects.using(db).filter(model=model)
        if not types.filter(app_label=old).exists():
            continue  # a new database: Django creates the content type after migrating
        types.filter(app_label=new).delete()
        types.filter(app_label=old).update(app_label=new)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('ops', '0007_incident_no_worker'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Incident',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('job', models.CharField(help_text='Registered job name, * for an outage of the platform, or queue:<name> for a queue no worker consumes.', max_length=100)),
                        ('kind', models.CharField(choices=[('failures', 'failed several times in a row'), ('missed', 'missed a run'), ('late', 'started late'), ('beat_down', 'beat down'), ('broker_down', 'broker down'), ('no_worker', 'no worker on a queue')], max_length=20)),
                        ('opened_at', models.DateTimeField(help_text='When the alert evaluation saw the condition.')),
                        ('resolved_at', models.DateTimeField(blank=True, help_text='Empty while open: no run has succeeded since.', null=True)),
                        ('down_since', models.DateTimeField(blank=True, help_text="Outages only: beat's last heartbeat, or the last watchdog pass that reached the broker. Missed and late slots from then until it resolved belong to the outage.", null=True)),
                        ('first_run_id', models.BigIntegerField(blank=True, help_text="Ledger row that opened the incident (an outage's first slot it cost; empty while it has cost none).", null=True)),
                        ('first_slot', models.DateTimeField(blank=True, null=True)),
                        ('last_run_id', models.BigIntegerField(blank=True, help_text='Newest ledger row showing the condition; rows up to it belong to this incident.', null=True)),
                        ('last_slot', models.DateTimeField(blank=True, null=True)),
                        ('occurrences', models.PositiveIntegerField(default=1, help_text="Ledger rows showing the condition while it was open (an outage's: the slots it cost).")),
                        ('summary', models.CharField(help_text='What the notification said.', max_length=255)),
                        ('detail', models.TextField(blank=True, help_text='The last error, or the lateness.')),
                        ('resolved_by_run_id', models.BigIntegerField(blank=True, help_text='The succeeded run that resolved it.', null=True)),
                        ('resolved_by_slot', models.DateTimeField(blank=True, help_text='Slot of that run: a missed or late slot before it belongs to this incident, even when recorded after it (the reconciler records a miss 90 s or more later).', null=True)),
                        ('resolution', models.CharField(blank=True, max_length=255)),
                    ],
                    options={
                        'db_table': 'ops_incident',
                        'ordering': ['-opened_at', '-id'],
                        'permissions': [('close_incident', 'Can close an alert incident by hand'), ('view_metrics', 'Can scrape /metrics')],
                        'indexes': [models.Index(fields=['job', 'kind', '-last_run_id'], name='incident_cursor')],
                        'constraints': [models.UniqueConstraint(condition=models.Q(('resolved_at__isnull', True)), fields=('job', 'kind'), name='incident_one_open_per_job_kind', violation_error_message='This job already has an open incident of this kind.'), models.CheckConstraint(condition=models.Q(('kind__in', ['failures', 'missed', 'late', 'beat_down', 'broker_down', 'no_worker'])), name='incident_kind_valid'), models.CheckConstraint(condition=models.Q(models.Q(('job', '*'), ('kind__in', ('beat_down', 'broker_down'))), models.Q(models.Q(('kind__in', ('beat_down', 'broker_down')), _negated=True), models.Q(('job', '*'), _negated=True)), _connector='OR'), name='incident_outage_is_job_star', violation_error_message='Outage incidents, and only they, have the job *.')],
                    },
                ),
                migrations.CreateModel(
                    name='AlertDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('event', models.CharField(choices=[('opened', 'opened'), ('resolved', 'resolved')], max_length=10)),
                        ('channel', models.CharField(choices=[('email', 'e-mail'), ('webhook', 'webhook')], max_length=10)),
                        ('target', models.CharField(help_text="Recipients, or the webhook's scheme and host (never its path).", max_length=500)),
                        ('status', models.CharField(choices=[('pending', 'pending'), ('sending', 'sending'), ('sent', 'sent'), ('failed', 'failed')], default='pending', max_length=10)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('last_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('error', models.TextField(blank=True, help_text='Why the last attempt failed.')),
                        ('incident', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='monitoring.incident')),
                    ],
                    options={
                        'verbose_name_plural': 'alert deliveries',
                        'db_table': 'ops_alertdelivery',
                        'ordering': ['created_at', 'id'],
                        'indexes': [models.Index(fields=['status', 'last_attempt_at'], name='alertdelivery_due')],
                        'constraints': [models.UniqueConstraint(fields=('incident', 'event', 'channel'), name='alertdelivery_once_per_channel')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_monitoring, content_types_to_ops),
    ]
