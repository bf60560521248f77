from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from rules.contrib.views import permission_required

from segments.models import Segment


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_list(request):
    query = request.GET.get("q", "").strip()
    segments = Segment.objects.select_related("owner").order_by("key")
    if query:
        segments = segments.filter(key__icontains=query) | segments.filter(name__icontains=query)
    page = Paginator(segments, 50).get_page(request.GET.get("page"))
    return render(request, "segments/segment_list.html", {"page": page, "query": query})
