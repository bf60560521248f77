"""HTTP API routes of the consent app (mounted at the site root by cdp/urls.py)."""

urlpatterns = []
