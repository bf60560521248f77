"""HTTP API routes of the segments app (mounted at the site root by cdp/urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from segments.api.lookup_views import segment_lookup, segment_lookup_bulk
from segments.api.views import SegmentViewSet

router = SimpleRouter()
router.register("api/segments", SegmentViewSet, basename="api-segments")

urlpatterns = [
    path("v1/segments", segment_lookup, name="segment-lookup"),
    path("v1/segments/bulk", segment_lookup_bulk, name="segment-lookup-bulk"),
    *router.urls,
]
