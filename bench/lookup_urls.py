"""The product's URLs plus /bench/constant for bench_segment_lookup.py."""

from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def constant(request):
    return JsonResponse({"segments": ["constant"]})


urlpatterns = [path("bench/constant", constant), path("", include("cdp.urls"))]
