from django.urls import path

from segments import views

app_name = "segments"
urlpatterns = [
    path("", views.segment_list, name="list"),
    path("new/", views.segment_new, name="new"),
    path("<slug:key>/", views.segment_detail, name="detail"),
    path("<slug:key>/edit/", views.segment_edit, name="edit"),
    path("<slug:key>/status/", views.segment_status, name="status"),
    path("<slug:key>/recompute/", views.segment_recompute, name="recompute"),
    path("<slug:key>/export.csv", views.segment_export, name="export"),
    path("<slug:key>/archive/", views.segment_archive, name="archive"),
    path("<slug:key>/restore/", views.segment_restore, name="restore"),
    path("<slug:key>/share/", views.segment_share, name="share"),
    path("<slug:key>/upload/", views.segment_upload, name="upload"),
    path("<slug:key>/deliveries/<int:delivery_id>/retry/", views.delivery_retry, name="delivery-retry"),
]
