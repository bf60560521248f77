"""Screens for sources (keys, origins, volume) and rejected events (inspect, correct, replay).

Only `profiles.manage_sources` (data team, admins) may open them; others get 403, unknown ids
404. Raw keys are shown exactly once, in the response to the POST that made them (never
stored, never put in the session). Reading or correcting a rejected payload is audited.
"""

from datetime import timedelta
from urllib.parse import urlsplit

import orjson
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from profiles.ingestion import selectors, services
from profiles.models import RejectedEvent, Source, SourceKey

PAGE_SIZE = 50
PERMISSION = "profiles.manage_sources"
OVERLAP_CHOICES = [("1", "1 hour"), ("24", "24 hours"), ("168", "7 days"), ("0", "none (old key stops now)")]


def _origins(text: str) -> list[str]:
    origins = []
    for line in text.replace(",", "\n").splitlines():
        origin = line.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*":
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise forms.ValidationError(f"“{origin[:80]}” is not an origin: write scheme://host[:port], "
                                            "e.g. https://shop.example, or * for any.")
        if origin not in origins:
            origins.append(origin)
    return origins


class SourceSettingsForm(forms.Form):
    allowed_origins = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Browser origins that may post events, one per line (e.g. https://shop.example); * for any. "
                  "Empty: server-side libraries only.")
    events_per_minute_limit = forms.IntegerField(
        required=False, min_value=2500, max_value=100_000_000,
        help_text="Most messages accepted per minute; empty for the installation default. At least 2,500 "
                  "(one full batch).")
    is_authoritative = forms.BooleanField(required=False, help_text="Its traits win when profiles merge (e.g. the CRM).")

    def clean_allowed_origins(self):
        return _origins(self.cleaned_data["allowed_origins"])


class SourceCreateForm(SourceSettingsForm):
    name = forms.CharField(max_length=120)
    kind = forms.ChoiceField(choices=Source.Kind.choices, initial=Source.Kind.WEBSITE)
    field_order = ["name", "kind", "allowed_origins", "events_per_minute_limit", "is_authoritative"]

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if Source.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError("A source with this name exists already.")
        return name


class SourceEditForm(SourceSettingsForm):
    is_active = forms.BooleanField(required=False, help_text="Inactive sources refuse events (401) until reactivated.")


class PayloadForm(forms.Form):
    payload = forms.CharField(widget=forms.Textarea(attrs={"rows": 16, "spellcheck": "false"}), strip=False)


def _guard(view):
    return login_required(permission_required(PERMISSION, raise_exception=True)(view))


@_guard
def source_list(request):
    return render(request, "profiles/sources/list.html", {"sources": selectors.source_overview_list()})


@_guard
def source_create(request):
    form = SourceCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        source, raw = services.source_create(
            name=data["name"], kind=data["kind"], allowed_origins=data["allowed_origins"],
            is_authoritative=data["is_authoritative"], events_per_minute_limit=data["events_per_minute_limit"],
            actor=request.user)
        return _key_shown(request, source, raw, SourceKey.Kind.WRITE, created_source=True)
    return render(request, "profiles/sources/create.html", {"form": form})


def _key_shown(request, source, raw, kind, created_source=False, rotated=None):
    response = render(request, "profiles/sources/key_shown.html", {
        "source": source, "raw_key": raw, "kind": kind, "created_source": created_source, "rotated": rotated,
        "ingest_host": request.build_absolute_uri("/").rstrip("/")})
    response["Cache-Control"] = "no-store"  # the only place the key ever appears
    return response


@_guard
def source_detail(request, source_id):
    source = get_object_or_404(Source, pk=source_id)
    form = SourceEditForm(initial={
        "allowed_origins": "\n".join(source.allowed_origins), "events_per_minute_limit": source.events_per_minute_limit,
        "is_authoritative": source.is_authoritative, "is_active": source.is_active})
    return _render_detail(request, source, form)


def _render_detail(request, source, form, status=200):
    volume = selectors.source_hourly_volume(source_id=source.pk)
    chart = {"labels": [row["hour"].strftime("%d %H:00") for row in volume],
             "accepted": [row["accepted"] for row in volume], "rejected": [row["rejected"] for row in volume],
             "dropped": [row["dropped"] for row in volume]}
    context = {"source": source, "form": form, "keys": selectors.source_keys(source=source), "chart": chart,
               "volume_total": sum(chart["accepted"]), "rejected_total": sum(chart["rejected"]),
               "dropped_total": sum(chart["dropped"]),
               "dropped_reasons": selectors.source_dropped_reasons(source_id=source.pk),
               "reasons": selectors.rejected_reason_counts(source_id=source.pk), "overlaps": OVERLAP_CHOICES}
    return render(request, "profiles/sources/detail.html", context, status=status)


@_guard
@require_POST
def source_edit(request, source_id):
    source = get_object_or_404(Source, pk=source_id)
    form = SourceEditForm(request.POST)
    if not form.is_valid():
        return _render_detail(request, source, form, status=400)
    data = form.cleaned_data
    services.source_update(source=source, allowed_origins=data["allowed_origins"], is_active=data["is_active"],
                           events_per_minute_limit=data["events_per_minute_limit"],
                           is_authoritative=data["is_authoritative"], actor=request.user)
    messages.success(request, "Source saved.")
    return redirect("profiles:source-detail", source_id=source.pk)


@_guard
@require_POST
def source_key_create(request, source_id):
    source = get_object_or_404(Source, pk=source_id)
    kind = request.POST.get("kind")
    if kind not in SourceKey.Kind.values:
        messages.error(request, "Choose a write key or a read key.")
        return redirect("profiles:source-detail", source_id=source.pk)
    _, raw = services.source_key_issue(source=source, kind=kind, actor=request.user)
    return _key_shown(request, source, raw, kind)


@_guard
@require_POST
def source_key_rotate(request, source_id, key_id):
    key = get_object_or_404(SourceKey, pk=key_id, source_id=source_id)
    hours = request.POST.get("overlap_hours", "24")
    if hours not in dict(OVERLAP_CHOICES) or key.revoked_at:
        messages.error(request, "This key cannot be rotated (revoked, or an unknown overlap).")
        return redirect("profiles:source-detail", source_id=source_id)
    _, raw = services.source_key_rotate_audited(key=key, overlap=timedelta(hours=int(hours)), actor=request.user)
    return _key_shown(request, key.source, raw, key.kind, rotated={"prefix": key.prefix, "hours": int(hours)})


@_guard
@require_POST
def source_key_revoke(request, source_id, key_id):
    key = get_object_or_404(SourceKey, pk=key_id, source_id=source_id)
    services.source_key_revoke_audited(key=key, actor=request.user)
    messages.success(request, f"Key {key.prefix}… revoked. Clients still using it now get 401.")
    return redirect("profiles:source-detail", source_id=source_id)


@_guard
def rejected_list(request):
    reason = request.GET.get("reason", "").strip()
    status = request.GET.get("status", "pending")
    status = status if status in ("pending", "replayed", "all") else "pending"
    try:
        source_id = int(request.GET.get("source") or 0) or None
    except ValueError:
        source_id = None
    rows = selectors.rejected_list(reason=reason, source_id=source_id, status=status)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "reason": reason, "status": status, "source_id": source_id,
               "reasons": selectors.rejected_reasons(), "sources": Source.objects.order_by("name"),
               "reason_counts": selectors.rejected_reason_counts(source_id=source_id)}
    return render(request, "profiles/sources/rejected_list.html", context)


@_guard
def rejected_detail(request, rejected_id):
    rejected = get_object_or_404(RejectedEvent.objects.select_related("source", "replayed_by"), pk=rejected_id)
    if request.method == "POST":
        form = PayloadForm(request.POST)
        if form.is_valid():
            problem = services.rejected_payload_update(rejected=rejected, text=form.cleaned_data["payload"],
                                                       actor=request.user)
            if problem is None:
                messages.success(request, "Payload corrected. Replay it to store it.")
                return redirect("profiles:rejected-detail", rejected_id=rejected.pk)
            form.add_error("payload", problem.message)
        status = 400
    else:
        form = PayloadForm(initial={"payload": _readable(services.rejected_payload_read(rejected=rejected,
                                                                                      actor=request.user))})
        status = 200
    context = {"rejected": rejected, "form": form, "sources": Source.objects.filter(is_active=True).order_by("name")}
    return render(request, "profiles/sources/rejected_detail.html", context, status=status)


def _readable(text: str) -> str:
    """JSON indented for reading and correcting; anything else as it was received."""
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


@_guard
@require_POST
def rejected_replay(request, rejected_id):
    rejected = get_object_or_404(RejectedEvent, pk=rejected_id)
    try:
        source_id = int(request.POST.get("source") or 0) or None
    except ValueError:
        source_id = None
    # A source is chosen only for rejections that have none (unknown key); others keep theirs.
    outcome = services.rejected_replay(rejected_id=rejected.pk, actor=request.user,
                                       source_id=source_id if rejected.source_id is None else None)
    (messages.success if outcome.replayed else messages.error)(request, outcome.note)
    return redirect("profiles:rejected-detail", rejected_id=rejected.pk)
