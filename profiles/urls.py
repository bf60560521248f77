from django.urls import path

from profiles import views, views_imports, views_sources

app_name = "profiles"
urlpatterns = [
    path("", views.profile_list, name="list"),
    path("<uuid:profile_id>/", views.profile_detail, name="detail"),
    path("<uuid:profile_id>/rectify/", views.profile_rectify, name="rectify"),
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
    # Sources, their keys, and rejected events (profiles/views_sources.py).
    path("sources/", views_sources.source_list, name="sources"),
    path("sources/new/", views_sources.source_create, name="source-create"),
    path("sources/<int:source_id>/", views_sources.source_detail, name="source-detail"),
    path("sources/<int:source_id>/edit/", views_sources.source_edit, name="source-edit"),
    path("sources/<int:source_id>/keys/new/", views_sources.source_key_create, name="source-key-create"),
    path("sources/<int:source_id>/keys/<int:key_id>/rotate/", views_sources.source_key_rotate,
         name="source-key-rotate"),
    path("sources/<int:source_id>/keys/<int:key_id>/revoke/", views_sources.source_key_revoke,
         name="source-key-revoke"),
    path("sources/rejected/", views_sources.rejected_list, name="rejected"),
    path("sources/rejected/<int:rejected_id>/", views_sources.rejected_detail, name="rejected-detail"),
    path("sources/rejected/<int:rejected_id>/replay/", views_sources.rejected_replay, name="rejected-replay"),
    # identity resolution
    path("<uuid:profile_id>/links/<int:link_id>/unmerge/", views.profile_unmerge, name="unmerge"),
    path("identity/why/", views.identity_why, name="why"),
    path("identity/flags/", views.identity_flags, name="flags"),
    path("identity/flags/<int:flag_id>/link/", views.identity_flag_decide, {"decision": "link"}, name="flag_link"),
    path("identity/flags/<int:flag_id>/dismiss/", views.identity_flag_decide, {"decision": "dismiss"},
         name="flag_dismiss"),
    path("identity/blocked/", views.identity_blocked, name="blocked"),
    path("identity/blocked/<int:blocked_id>/toggle/", views.identity_blocked_toggle, name="blocked_toggle"),
    path("identity/unattributed/requeue/", views.identity_unattributed_requeue, name="unattributed_requeue"),
]
