from django.urls import path

from consent import views

app_name = "consent"
urlpatterns = [
    path("", views.consent_home, name="home"),
    path("ledger/", views.ledger_list, name="ledger"),
    path("ledger/export.csv", views.ledger_export, name="ledger_export"),
    path("ledger/<int:sequence>/", views.record_detail, name="record"),
    path("verify/", views.ledger_verify, name="verify"),
    path("person/", views.person_consent, name="person"),
    path("mappings/", views.mapping_list, name="mappings"),
    path("mappings/<int:pk>/delete/", views.mapping_delete, name="mapping_delete"),
    path("requests/", views.request_list, name="requests"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/download/", views.request_download, name="request_download"),
    path("requests/<int:pk>/<slug:action>/", views.request_action, name="request_action"),
    path("audit/", views.audit_list, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
]
