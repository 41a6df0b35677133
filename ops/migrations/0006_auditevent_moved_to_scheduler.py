"""The audit trail moved to the scheduler (scheduler 0009): state only, the table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0005_outage_incidents'),
        ('scheduler', '0009_auditevent_moved_from_ops'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name='AuditEvent')],
            database_operations=[],
        ),
    ]
