"""HTTP API routes of the profiles app (mounted at the site root by cdp/urls.py).

Ingestion routes take no trailing slash (an APPEND_SLASH redirect would turn a POST into a
GET); a trailing slash is tolerated all the same.
"""

from django.urls import path, re_path

from profiles.api import imports, views

urlpatterns = [
    re_path(r"^v1/(?P<endpoint>batch|import|identify|track|page|screen|group|alias|[itpsgab])/?$", views.ingest,
            name="ingest"),
    re_path(r"^v1/m/?$", views.metrics, name="ingest-metrics"),
    path("v1/projects/<str:write_key>/settings", views.project_settings, name="ingest-settings"),
    # --- imports (staff, session auth)
    path("api/imports/", imports.ImportListView.as_view(), name="api-imports"),
    path("api/imports/<int:job_id>/", imports.ImportDetailView.as_view(), name="api-import"),
    path("api/imports/<int:job_id>/mapping/", imports.ImportMappingView.as_view(), name="api-import-mapping"),
    path("api/imports/<int:job_id>/preview/", imports.ImportPreviewView.as_view(), name="api-import-preview"),
    path("api/imports/<int:job_id>/start/", imports.ImportActionView.as_view(action="start"), name="api-import-start"),
    path("api/imports/<int:job_id>/cancel/", imports.ImportActionView.as_view(action="cancel"),
         name="api-import-cancel"),
    path("api/imports/<int:job_id>/retry/", imports.ImportActionView.as_view(action="retry"), name="api-import-retry"),
    path("api/imports/<int:job_id>/errors.csv", imports.ImportErrorReportView.as_view(), name="api-import-errors"),
    path("api/import-mappings/", imports.MappingListView.as_view(), name="api-import-mappings"),
]
