"""Read queries of the content app."""

from cdp.sharing import objects_visible_to
from content.models import ContentBlock, Experiment
from content.rules import reads_all_blocks


def experiment_active_count() -> int:
    return Experiment.objects.filter(status=Experiment.Status.RUNNING).count()


def blocks_visible_to(user):
    """The blocks a user may see (list screens filter here, not only per object): all for admins
    and compliance officers, own and shared ones for marketers."""
    blocks = ContentBlock.objects.select_related("slot", "owner").prefetch_related("segments")
    if reads_all_blocks.test(user):
        return blocks
    return objects_visible_to(user, blocks)
