"""Browser screens: segment list, builder, segment page, export, recompute with progress, sharing."""

import csv
import io

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Q
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from cdp.roles import ROLES
from consent.services import audit_record
from profiles.models import Source
from segments import presets, selectors
from segments.errors import SegmentError
from segments.evaluation import sentence
from segments.masking import csv_safe
from segments.models import Segment, WebhookDelivery
from segments.purposes import purpose_choices
from segments.services import definitions, static, webhooks
from segments.services.recompute import segment_recompute_request

SCHEDULES = [(None, "Manual only"), (15, "Every 15 minutes"), (60, "Hourly"), (360, "Every 6 hours"),
             (1440, "Daily")]
EXPORT_BATCH = 1000


def _segment_for(request, key: str, permission: str) -> Segment:
    """The segment if the user may see it (else 404: "not yours" does not exist) and do `permission`."""
    segment = Segment.objects.visible_to(request.user).select_related("owner").filter(key=key).first()
    if segment is None:
        raise Http404("No such segment")
    if not request.user.has_perm(permission, segment):
        raise PermissionDenied
    return segment


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_list(request):
    query = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", "key")
    archived = request.GET.get("archived") == "1"
    segments = selectors.segment_list(user=request.user, query=query, sort=sort, archived=archived)
    page = Paginator(segments, 50).get_page(request.GET.get("page"))
    return render(request, "segments/segment_list.html", {
        "page": page, "query": query, "sort": sort if sort in selectors.SORTS else "key", "archived": archived,
        "can_create": request.user.has_perm("segments.create"), "presets": presets.PRESETS.values()})


def _builder_context(request, segment: Segment | None, definition: dict | None, template_key: str = "") -> dict:
    return {
        "segment": segment,
        "builder": {
            "mode": "edit" if segment else "create",
            "key": segment.key if segment else "",
            "live": bool(segment and segment.computed_at),
            "definition": definition,
            "template": template_key,
            "api": reverse("api-segments-list"),
            "detail_url": reverse("segments:detail", args=[segment.key]) if segment else "",
            "templates": [{"key": p.key, "name": p.name} for p in presets.PRESETS.values()],
        },
        "schedules": SCHEDULES,
        "sources": Source.objects.filter(is_active=True).order_by("name"),
        "exposed": set(segment.exposed_sources.values_list("id", flat=True)) if segment else set(),
        "purposes": purpose_choices(),
        "required_purposes": set(segment.required_purposes) if segment else set(),
    }


@login_required
@permission_required("segments.create", raise_exception=True)
def segment_new(request):
    template_key = request.GET.get("template", "")
    definition = None
    initial = {}
    if template_key:
        try:
            definition = presets.preset_definition(template_key)
        except SegmentError as exc:
            messages.error(request, exc.message)
            return redirect("segments:list")
        preset = presets.PRESETS[template_key]
        initial = {"key": preset.key, "name": preset.name, "description": preset.description,
                   "schedule_minutes": preset.schedule_minutes}
    context = _builder_context(request, None, definition, template_key)
    context["initial"] = initial
    return render(request, "segments/builder.html", context)


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_edit(request, key):
    segment = _segment_for(request, key, "segments.change")
    if segment.kind != Segment.Kind.RULES:
        messages.info(request, "Static segments change by uploading a list on their page.")
        return redirect("segments:detail", key=key)
    context = _builder_context(request, segment, segment.definition)
    context["initial"] = {"key": segment.key, "name": segment.name, "description": segment.description,
                          "schedule_minutes": segment.schedule_minutes}
    return render(request, "segments/builder.html", context)


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_detail(request, key):
    segment = _segment_for(request, key, "segments.view")
    user = request.user
    page = Paginator(selectors.segment_members(segment=segment), 25).get_page(request.GET.get("page"))
    rows, masked = selectors.member_rows(memberships=page.object_list, user=user)
    if rows and not masked:
        audit_record(actor=user, action="segment.members_viewed", object_type="segment", object_id=segment.key,
                     details={"rows": len(rows), "page": page.number, "via": "page"})
    daily = selectors.segment_daily_changes(segment=segment, days=30)
    freshness = selectors.segment_freshness(segment=segment)
    chart = {"labels": [row["day"].isoformat() for row in daily], "size": [row["size"] for row in daily],
             "entered": [row["entered"] for row in daily], "exited": [row["exited"] for row in daily]}
    context = {
        "segment": segment, "page": page, "rows": rows, "masked": masked, "chart": chart,
        "daily_recent": list(reversed(daily[-7:])),
        "overlap": selectors.segment_overlap(segment=segment, user=user),
        "freshness": freshness, "progress": selectors.run_progress(freshness["active_run"], segment),
        "sentence": sentence(segment.definition) if segment.kind == Segment.Kind.RULES and segment.definition
        else "A static list of uploaded people.",
        "deliveries": selectors.segment_deliveries(segment=segment),
        "can_change": user.has_perm("segments.change", segment),
        "can_recompute": user.has_perm("segments.recompute", segment),
        "can_share": user.has_perm("segments.share", segment),
        "can_archive": user.has_perm("segments.archive", segment),
        "can_export": user.has_perm("segments.export", segment),
        "grants": _grants(segment) if user.has_perm("segments.share", segment) else None,
        "share_users": User.objects.filter(Q(is_superuser=True) | Q(groups__name__in=ROLES), is_active=True)
        .exclude(pk=segment.owner_id).distinct().order_by("username")[:200],
        "share_groups": Group.objects.order_by("name"),
        "exposed_sources": segment.exposed_sources.order_by("name"),
        "required_purposes": [item for item in purpose_choices() if item["value"] in segment.required_purposes],
    }
    return render(request, "segments/segment_detail.html", context)


def _grants(segment):
    from segments.api.views import _grants as grants

    return grants(segment)


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_status(request, key):
    """The freshness / progress box; htmx polls it while a recompute is queued or running."""
    segment = _segment_for(request, key, "segments.view")
    freshness = selectors.segment_freshness(segment=segment)
    return render(request, "segments/_status.html", {
        "segment": segment, "freshness": freshness, "progress": selectors.run_progress(freshness["active_run"], segment),
        "can_recompute": request.user.has_perm("segments.recompute", segment)})


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def segment_recompute(request, key):
    segment = _segment_for(request, key, "segments.recompute")
    if segment.kind == Segment.Kind.RULES and segment.is_active:
        with transaction.atomic():
            segment_recompute_request(segment=segment, trigger="manual", actor=request.user)
    if request.htmx:
        return segment_status(request, key)
    messages.success(request, "Recompute queued.")
    return redirect("segments:detail", key=key)


@login_required
@permission_required("segments.browse", raise_exception=True)
def segment_export(request, key):
    """All members as CSV (streamed); personal fields masked per role; cells safe from formulas;
    only people who granted every purpose the segment requires (read now, batch by batch)."""
    segment = _segment_for(request, key, "segments.export")
    user = request.user
    members = selectors.segment_members(segment=segment)
    masked = not user.has_perm("segments.view_personal_data")
    audit_record(actor=user, action="segment.exported", object_type="segment", object_id=segment.key,
                 details={"rows": segment.member_count, "masked": masked,
                          "required_purposes": segment.required_purposes})

    def lines():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["profile_id", "name", "email", "country", "city", "entered_at", "last_seen_at"])
        offset = 0
        while True:
            batch = list(members[offset:offset + EXPORT_BATCH])
            if not batch:
                break
            rows, _ = selectors.member_rows(memberships=selectors.members_consented(
                memberships=batch, purposes=segment.required_purposes), user=user)
            for row in rows:
                writer.writerow([csv_safe(row[column]) for column in ("profile_id", "name", "email", "country", "city")]
                                + [row["entered_at"].isoformat(),
                                   row["last_seen_at"].isoformat() if row["last_seen_at"] else ""])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            offset += EXPORT_BATCH
        if offset == 0:
            yield buffer.getvalue()

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="segment-{segment.key}-{stamp}.csv"'
    return response


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def segment_archive(request, key):
    segment = _segment_for(request, key, "segments.archive")
    try:
        definitions.segment_archive(segment=segment, actor=request.user)
    except SegmentError as exc:
        messages.error(request, exc.message)
        return redirect("segments:detail", key=key)
    messages.success(request, f"Segment {key} archived. You can restore it from the archived list.")
    return redirect("segments:list")


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def segment_restore(request, key):
    segment = _segment_for(request, key, "segments.archive")
    definitions.segment_restore(segment=segment, actor=request.user)
    messages.success(request, f"Segment {key} restored; it is being recomputed.")
    return redirect("segments:detail", key=key)


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def segment_share(request, key):
    segment = _segment_for(request, key, "segments.share")
    target = request.POST.get("target", "")
    user = group = None
    kind, _, name = target.partition(":")
    if kind == "user":
        user = User.objects.filter(username=name, is_active=True).first()
    elif kind == "group":
        group = Group.objects.filter(name=name).first()
    try:
        if user is None and group is None:
            raise SegmentError("invalid_grantee", "Choose a user or a group to share with.")
        definitions.segment_share(segment=segment, actor=request.user, permission=request.POST.get("permission", ""),
                                  user=user, group=group, grant=request.POST.get("grant", "1") == "1")
        messages.success(request, "Sharing updated.")
    except SegmentError as exc:
        messages.error(request, exc.message)
    return redirect(reverse("segments:detail", args=[key]) + "#sharing")


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def segment_upload(request, key):
    """A static segment's members from a CSV with a header naming the identifier columns."""
    segment = _segment_for(request, key, "segments.change")
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise SegmentError("missing_file", "Choose a CSV file to upload.")
        if upload.size > 20 * 1024 * 1024:
            raise SegmentError("upload_too_large", "The file is larger than 20 MB.")
        entries = _csv_entries(upload.read())
        report = static.static_members_replace(segment=segment, actor=request.user, entries=entries,
                                               mode=request.POST.get("mode", "replace"))
    except SegmentError as exc:
        messages.error(request, exc.message)
        return redirect("segments:detail", key=key)
    problems = report.problems[:20]
    summary = (f"{report.rows:,} rows: {report.matched:,} matched, {len(report.problems):,} not matched. "
               f"{report.entered:,} entered, {report.exited:,} left; {report.size:,} members now.")
    if problems:
        summary += " Not matched: " + "; ".join(f"row {p['row']}: {p['reason']}" for p in problems)
        summary += " …" if len(report.problems) > len(problems) else ""
    messages.success(request, summary)
    return redirect("segments:detail", key=key)


def _csv_entries(data: bytes) -> list[tuple[int, str, str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SegmentError("invalid_file", "The file must be UTF-8 encoded CSV.") from None
    reader = csv.reader(io.StringIO(text))
    header = [column.strip().lower() for column in next(reader, [])]
    usable = [index for index, column in enumerate(header) if column in static.KINDS]
    if not usable:
        raise SegmentError("invalid_file", "The first row must name identifier columns: " + ", ".join(static.KINDS))
    entries = []
    for row_number, row in enumerate(reader, start=2):
        values = [(header[index], row[index].strip()) for index in usable if index < len(row) and row[index].strip()]
        if not values:
            entries.append((row_number, "(empty)", ""))
        entries.extend((row_number, kind, value) for kind, value in values[:1])
    return entries


@login_required
@require_POST
@permission_required("segments.browse", raise_exception=True)
def delivery_retry(request, key, delivery_id):
    segment = _segment_for(request, key, "segments.change")
    delivery = WebhookDelivery.objects.filter(segment=segment, pk=delivery_id).first()
    if delivery is None:
        raise Http404("No such delivery")
    webhooks.webhook_retry(delivery=delivery)
    messages.success(request, "Delivery queued again.")
    return redirect(reverse("segments:detail", args=[key]) + "#webhooks")
