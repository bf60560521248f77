from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from rules.contrib.views import permission_required

from consent.models import Purpose


@login_required
@permission_required("consent.browse", raise_exception=True)
def consent_home(request):
    return render(request, "consent/home.html", {"purposes": Purpose.objects.order_by("key")})
