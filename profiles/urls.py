from django.urls import path

from profiles import views, views_imports

app_name = "profiles"
urlpatterns = [
    path("", views.profile_list, name="list"),
    path("<uuid:profile_id>/", views.profile_detail, name="detail"),
    # --- imports
    path("imports/", views_imports.imports_home, name="imports"),
    path("imports/upload/", views_imports.import_upload, name="import_upload"),
    path("imports/<int:job_id>/", views_imports.import_detail, name="import_detail"),
    path("imports/<int:job_id>/mapping/", views_imports.import_mapping, name="import_mapping"),
    path("imports/<int:job_id>/preview/", views_imports.import_preview, name="import_preview"),
    path("imports/<int:job_id>/progress/", views_imports.import_progress, name="import_progress"),
    path("imports/<int:job_id>/cancel/", views_imports.import_cancel, name="import_cancel"),
    path("imports/<int:job_id>/retry/", views_imports.import_retry, name="import_retry"),
    path("imports/<int:job_id>/errors.csv", views_imports.import_error_report, name="import_errors"),
]
