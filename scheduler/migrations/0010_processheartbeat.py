"""Beat's heartbeat table becomes every watched process's: `kind` says beat or watchdog
(scheduler.heartbeat); existing rows are beat's."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0009_auditevent_moved_from_ops"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="beatheartbeat",
            name="beatheartbeat_one_per_process",
        ),
        migrations.RenameModel(old_name="BeatHeartbeat", new_name="ProcessHeartbeat"),
        migrations.AlterModelOptions(
            name="processheartbeat",
            options={"verbose_name": "process heartbeat"},
        ),
        migrations.AddField(
            model_name="processheartbeat",
            name="kind",
            field=models.CharField(
                choices=[("beat", "beat"), ("watchdog", "watchdog")],
                default="beat",
                help_text="Which process: beat (stamps every tick) or the watchdog (every pass).",
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="processheartbeat",
            name="hostname",
            field=models.CharField(help_text="Host the process runs on.", max_length=255),
        ),
        migrations.AlterField(
            model_name="processheartbeat",
            name="pid",
            field=models.PositiveIntegerField(help_text="Process id on that host."),
        ),
        migrations.AlterField(
            model_name="processheartbeat",
            name="started_at",
            field=models.DateTimeField(help_text="When this process stamped first."),
        ),
        migrations.AlterField(
            model_name="processheartbeat",
            name="last_tick_at",
            field=models.DateTimeField(
                help_text="PostgreSQL's clock at the process's latest stamp (every few seconds "
                "for beat, every pass for the watchdog)."
            ),
        ),
        migrations.AddConstraint(
            model_name="processheartbeat",
            constraint=models.UniqueConstraint(
                fields=("kind", "hostname", "pid"), name="processheartbeat_one_per_process"
            ),
        ),
    ]
