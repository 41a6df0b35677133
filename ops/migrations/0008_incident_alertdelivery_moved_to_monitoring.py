"""Alert incidents and their notifications moved to monitoring (monitoring 0001): state only, the
tables stay (`ops_incident`, `ops_alertdelivery`)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0007_incident_no_worker'),
        ('monitoring', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='AlertDelivery'),
                migrations.DeleteModel(name='Incident'),
            ],
            database_operations=[],
        ),
    ]
