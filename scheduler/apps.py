from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"
    verbose_name = "Scheduler"

    def ready(self) -> None:
        from scheduler import checks, registry, shadow, signals, tasks  # noqa: F401

        registry.discover()
        tasks.register_job_tasks()
