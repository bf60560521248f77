"""Browser screens of the profiles app."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, render
from rules.contrib.views import permission_required

from profiles import selectors
from profiles.models import Profile

PAGE_SIZE = 50


@login_required
@permission_required("profiles.browse", raise_exception=True)
def profile_list(request):
    query = request.GET.get("q", "").strip()
    page = Paginator(selectors.profile_list_queryset(query=query), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "profiles/profile_list.html", {"page": page, "query": query})


@login_required
@permission_required("profiles.browse", raise_exception=True)
def profile_detail(request, profile_id):
    profile = get_object_or_404(Profile.objects.select_related("computed"), id=profile_id)
    if profile.merged_into_id:
        profile = get_object_or_404(Profile, id=profile.merged_into_id)
    events = Paginator(selectors.profile_events(profile=profile), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "profile": profile,
        "identities": selectors.profile_identities(profile=profile),
        "events": events,
        "transactions": selectors.profile_transactions(profile=profile)[:20],
        "computed": getattr(profile, "computed", None),
    }
    return render(request, "profiles/profile_detail.html", context)
