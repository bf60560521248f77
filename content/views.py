from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from rules.contrib.views import permission_required

from content.models import Experiment
from content.selectors import blocks_visible_to


@login_required
@permission_required("content.browse", raise_exception=True)
def block_list(request):
    blocks = blocks_visible_to(request.user).order_by("slot__key", "-priority", "key")
    page = Paginator(blocks, 50).get_page(request.GET.get("page"))
    return render(request, "content/block_list.html", {"page": page})


@login_required
@permission_required("content.browse", raise_exception=True)
def experiment_list(request):
    experiments = Experiment.objects.select_related("block").order_by("-created_at")
    page = Paginator(experiments, 50).get_page(request.GET.get("page"))
    return render(request, "content/experiment_list.html", {"page": page})
