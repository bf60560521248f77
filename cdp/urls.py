from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cdp import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("profiles/", include("profiles.urls")),
    path("segments/", include("segments.urls")),
    path("content/", include("content.urls")),
    path("consent/", include("consent.urls")),
    # Each app's HTTP API (ingestion /v1/..., lookups, staff /api/...) mounts at the root.
    path("", include("profiles.api.urls")),
    path("", include("segments.api.urls")),
    path("", include("consent.api.urls")),
    path("", include("content.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
