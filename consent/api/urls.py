"""HTTP API routes of the consent app (mounted at the site root by cdp/urls.py). Client routes
have no trailing slash (POSTs must not be redirected)."""

from django.urls import path

from consent.api import views

urlpatterns = [
    path("v1/consent", views.ConsentSetView.as_view(), name="consent-api-set"),
    path("v1/consent/withdraw", views.ConsentWithdrawView.as_view(), name="consent-api-withdraw"),
    path("api/consent/profiles/<uuid:profile_id>", views.ProfileConsentView.as_view(), name="consent-api-profile"),
    path("api/consent/records", views.RecordListView.as_view(), name="consent-api-records"),
    path("api/consent/requests", views.RequestListView.as_view(), name="consent-api-requests"),
    path("api/consent/requests/<int:pk>", views.RequestDetailView.as_view(), name="consent-api-request"),
]
