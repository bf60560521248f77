from django.urls import path

from profiles import views, views_sources

app_name = "profiles"
urlpatterns = [
    path("", views.profile_list, name="list"),
    path("<uuid:profile_id>/", views.profile_detail, name="detail"),
    path("imports/", views.imports_home, name="imports"),
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
]
