"""HTTP API routes of the content app (mounted at the site root by cdp/urls.py)."""

urlpatterns = []
