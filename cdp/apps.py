from django.apps import AppConfig


class CdpConfig(AppConfig):
    name = "cdp"
    verbose_name = "CDP core"

    def ready(self):
        from cdp import checks  # noqa: F401 - registers system checks
