"""Read queries of the segments app."""

from segments.models import Segment


def segment_count() -> int:
    return Segment.objects.filter(is_active=True).count()
