"""Dashboard and health check."""

import logging

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from rules.contrib.views import permission_required

from cdp.celery import app as celery_app
from content import selectors as content_selectors
from profiles import selectors as profile_selectors
from segments import selectors as segment_selectors

logger = logging.getLogger(__name__)

DASHBOARD_CACHE_SECONDS = 60


def _dashboard_figures() -> dict:
    figures = cache.get("dashboard:figures")
    if figures is None:
        figures = {
            "profiles": profile_selectors.profile_count(),
            "events_today": profile_selectors.event_count_today(),
            "segments": segment_selectors.segment_count(),
            "active_experiments": content_selectors.experiment_active_count(),
            "events_per_day": profile_selectors.events_per_day(days=30),
        }
        cache.set("dashboard:figures", figures, DASHBOARD_CACHE_SECONDS)
    return figures


@login_required
@permission_required("cdp.view_dashboard", raise_exception=True)
def dashboard(request):
    figures = _dashboard_figures()
    chart = {
        "labels": [day.isoformat() for day, _ in figures["events_per_day"]],
        "counts": [count for _, count in figures["events_per_day"]],
    }
    return render(request, "cdp/dashboard.html", {"figures": figures, "chart": chart})


@never_cache
def healthz(request):
    """Database and broker reachability, for load balancers and `make run`'s start-up wait."""
    status = {"database": "ok", "broker": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means unhealthy; the reason goes to the log
        logger.warning("healthz: database unreachable", extra={"error": type(exc).__name__})
        status["database"] = "unreachable"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        logger.warning("healthz: broker unreachable", extra={"error": type(exc).__name__})
        status["broker"] = "unreachable"
    healthy = all(value == "ok" for value in status.values())
    return JsonResponse({"status": "ok" if healthy else "unhealthy", **status}, status=200 if healthy else 503)
