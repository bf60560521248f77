"""HTTP API routes of the profiles app (mounted at the site root by cdp/urls.py)."""

urlpatterns = []
