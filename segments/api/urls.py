"""HTTP API routes of the segments app (mounted at the site root by cdp/urls.py)."""

urlpatterns = []
