"""HTTP API routes of the content app (mounted at the site root by cdp/urls.py)."""

from django.urls import path

from content.api.views import content_decide

urlpatterns = [
    path("v1/decide", content_decide, name="content-decide"),
]
