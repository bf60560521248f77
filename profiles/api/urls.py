"""HTTP API routes of the profiles app (mounted at the site root by cdp/urls.py).

Ingestion routes take no trailing slash (an APPEND_SLASH redirect would turn a POST into a
GET); a trailing slash is tolerated all the same.
"""

from django.urls import path, re_path

from profiles.api import views

urlpatterns = [
    re_path(r"^v1/(?P<endpoint>batch|import|identify|track|page|screen|group|alias|[itpsgab])/?$", views.ingest,
            name="ingest"),
    re_path(r"^v1/m/?$", views.metrics, name="ingest-metrics"),
    path("v1/projects/<str:write_key>/settings", views.project_settings, name="ingest-settings"),
]
