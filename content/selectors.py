"""Read queries of the content app."""

from content.models import Experiment


def experiment_active_count() -> int:
    return Experiment.objects.filter(status=Experiment.Status.RUNNING).count()
