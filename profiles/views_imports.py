"""Browser screens of imports: history + upload, mapping step with preview, live progress,
outcome report and error report download."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseNotAllowed, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from consent.services import audit_record
from profiles.imports import fields as F
from profiles.imports import selectors, services
from profiles.imports.cleaning import CHANNELS, DATE_FORMATS, DEFAULT_LABEL_MAPS
from profiles.imports.formats import ImportFileError
from profiles.imports.mapping import ENCODINGS, MappingError, label_map_parse, label_map_text
from profiles.models import ImportJob, ImportMapping, Source

PAGE_SIZE = 25
LABEL_MAP_FIELDS = ("gender", "income_band", "language", "channel", "consent_purpose")


class UploadForm(forms.Form):
    kind = forms.ChoiceField(choices=ImportJob.Kind.choices, label="What the file holds")
    source = forms.ModelChoiceField(queryset=Source.objects.filter(is_active=True), label="Source",
                                    empty_label=None, help_text="Where the data comes from (e.g. the CRM)")
    mapping = forms.ModelChoiceField(queryset=ImportMapping.objects.all(), required=False, label="Saved mapping",
                                     empty_label="Match columns automatically")
    file = forms.FileField(label="File (CSV, gzip'd CSV or XLSX, up to 1 GB)")


def _job_for(request, job_id: int) -> ImportJob:
    """A job the user may see, or 404 (never a hint that it exists)."""
    return get_object_or_404(selectors.import_jobs_visible_to(request.user), pk=job_id)


@login_required
@permission_required("profiles.browse_imports", raise_exception=True)
def imports_home(request):
    query = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    jobs = selectors.import_job_list(user=request.user, query=query, status=status)
    page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
    can_run = request.user.has_perm("profiles.run_imports")
    return render(request, "profiles/imports.html", {
        "page": page, "query": query, "status": status, "statuses": ImportJob.Status.choices,
        "form": UploadForm() if can_run else None, "can_run": can_run,
        "has_sources": Source.objects.filter(is_active=True).exists(),
    })


@login_required
@permission_required("profiles.run_imports", raise_exception=True)
@require_POST
def import_upload(request):
    """Multipart upload (the drag-and-drop page posts it with XHR for its progress bar)."""
    form = UploadForm(request.POST, request.FILES)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            job = services.import_upload(user=request.user, source=form.cleaned_data["source"],
                                         kind=form.cleaned_data["kind"], file_name=upload.name,
                                         chunks=upload.chunks(), mapping=form.cleaned_data["mapping"])
        except ImportFileError as exc:
            form.add_error("file", exc.message)
        else:
            url = reverse("profiles:import_mapping", args=[job.id])
            return JsonResponse({"id": job.id, "next": url}, status=201) if wants_json else redirect(url)
    if wants_json:
        errors = {name: [str(e) for e in errs] for name, errs in form.errors.items()}
        return JsonResponse({"code": "invalid_upload", "message": "The upload was not accepted.", "errors": errors},
                            status=400)
    jobs = selectors.import_job_list(user=request.user)
    return render(request, "profiles/imports.html", {
        "page": Paginator(jobs, PAGE_SIZE).get_page(1), "form": form, "can_run": True, "statuses":
        ImportJob.Status.choices, "has_sources": True}, status=400)


def _posted_mapping(request, job: ImportJob) -> tuple[dict, dict]:
    columns = {}
    for index, header in enumerate(job.headers):
        target = request.POST.get(f"target_{index}", "")
        if target == "custom":
            target = F.CUSTOM_PREFIX + (request.POST.get(f"trait_{index}", "").strip() or F.trait_name(header))
        columns[header] = target
    options = {"date_format": request.POST.get("date_format") or "iso",
               "decimal_comma": request.POST.get("decimal_comma") == "on"}
    for key in ("default_currency", "default_channel", "encoding", "phone_region"):
        value = request.POST.get(key, "").strip()
        if value:
            options[key] = value.upper() if key in ("default_currency", "phone_region") else value
    label_maps = {}
    for name in LABEL_MAP_FIELDS:
        text = request.POST.get(f"labels_{name}")
        if text is not None:
            label_maps[name] = label_map_parse(text)
    if label_maps:
        options["label_maps"] = label_maps
    return columns, options


def _mapping_context(job: ImportJob, columns: dict, options: dict, problems=None) -> dict:
    sample = services.sample_rows_for(job=job, rows=3)
    field_choices = [(name, spec.label) for name, spec in F.fields_for(job.kind).items()]
    rows = []
    for index, header in enumerate(job.headers):
        target = columns.get(header, "")
        rows.append({"index": index, "header": header, "target": target,
                     "custom": target[len(F.CUSTOM_PREFIX):] if target.startswith(F.CUSTOM_PREFIX) else "",
                     "suggested_trait": F.trait_name(header), "samples": sample.get(header, [])})
    hints = services.import_hints(job=job, columns=columns)
    mapped = set(columns.values())
    label_maps = []
    for name in LABEL_MAP_FIELDS:
        if name in mapped:
            merged = dict(DEFAULT_LABEL_MAPS.get(name, {}))
            merged.update((options.get("label_maps") or {}).get(name, {}))
            label_maps.append({"field": name, "label": F.field_label(job.kind, name), "text": label_map_text(merged)})
    return {
        "job": job, "rows": rows, "field_choices": field_choices, "options": options, "hints": hints,
        "date_formats": DATE_FORMATS.items(), "channels": sorted(CHANNELS), "encodings": sorted(ENCODINGS),
        "label_maps": label_maps, "problems": problems or [], "is_transactions": job.kind == F.TRANSACTIONS,
        "saved_mappings": selectors.import_mapping_list(kind=job.kind),
        "date_ambiguous": bool(hints["date_candidates"]) and "date_format" not in job.options,
    }


@login_required
@permission_required("profiles.run_imports", raise_exception=True)
def import_mapping(request, job_id: int):
    job = _job_for(request, job_id)
    if job.status != ImportJob.Status.UPLOADED:
        return redirect("profiles:import_detail", job_id=job.id)
    if request.method == "GET":
        columns, options = dict(job.columns), dict(job.options)
        saved = request.GET.get("mapping")
        if saved:
            mapping = get_object_or_404(ImportMapping, pk=saved, kind=job.kind)
            columns.update({h: t for h, t in mapping.columns.items() if h in job.headers})
            options.update(mapping.options)
        return render(request, "profiles/imports/mapping.html", _mapping_context(job, columns, options))
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    columns, options = _posted_mapping(request, job)
    try:
        services.import_configure(job=job, user=request.user, columns=columns, options=options,
                                  save_as=request.POST.get("save_as", "") if request.POST.get("save_mapping") else "")
        if request.POST.get("action") == "save":
            messages.success(request, "Mapping saved.")
            return redirect("profiles:import_mapping", job_id=job.id)
        services.import_start(job=job, user=request.user)
    except (MappingError, ImportFileError) as exc:
        problems = exc.problems if isinstance(exc, MappingError) else [exc.message]
        return render(request, "profiles/imports/mapping.html", _mapping_context(job, columns, options, problems),
                      status=400)
    return redirect("profiles:import_detail", job_id=job.id)


@login_required
@permission_required("profiles.run_imports", raise_exception=True)
@require_POST
def import_preview(request, job_id: int):
    """htmx: the first 20 rows after mapping and cleaning, problems highlighted."""
    job = _job_for(request, job_id)
    columns, options = _posted_mapping(request, job)
    try:
        labels, rows = services.import_preview(job=job, columns=columns, options=options)
    except (MappingError, ImportFileError) as exc:
        problems = exc.problems if isinstance(exc, MappingError) else [exc.message]
        return render(request, "profiles/imports/_preview.html", {"problems": problems})
    return render(request, "profiles/imports/_preview.html", {"labels": labels, "rows": rows})


@login_required
@permission_required("profiles.browse_imports", raise_exception=True)
def import_detail(request, job_id: int):
    job = services.import_liveness_check(job=_job_for(request, job_id))
    context = {"job": job, "progress": selectors.import_progress(job=job),
               "mapping_rows": selectors.import_mapping_rows(job=job), "can_run": request.user.has_perm(
                   "profiles.run_imports")}
    if job.status in ImportJob.FINAL_STATUSES:
        context.update(selectors.import_report(job=job))
    return render(request, "profiles/imports/detail.html", context)


@login_required
@permission_required("profiles.browse_imports", raise_exception=True)
def import_progress(request, job_id: int):
    """htmx partial polled every second until the import ends."""
    job = services.import_liveness_check(job=_job_for(request, job_id))
    progress = selectors.import_progress(job=job)
    response = render(request, "profiles/imports/_progress.html", {"job": job, "progress": progress,
                                                                    "can_run": request.user.has_perm(
                                                                        "profiles.run_imports")})
    if progress.is_final and request.htmx:
        # The whole page changes (report, error list): reload it once.
        response["HX-Refresh"] = "true"
    return response


@login_required
@permission_required("profiles.run_imports", raise_exception=True)
@require_POST
def import_cancel(request, job_id: int):
    job = services.import_cancel(job=_job_for(request, job_id), user=request.user)
    messages.info(request, "Cancelling: the import is rolled back, nothing from this file stays in the database."
                  if job.status == ImportJob.Status.RUNNING else "Import cancelled; nothing was loaded.")
    return redirect("profiles:import_detail", job_id=job.id)


@login_required
@permission_required("profiles.run_imports", raise_exception=True)
@require_POST
def import_retry(request, job_id: int):
    try:
        job = services.import_retry(job=_job_for(request, job_id), user=request.user)
    except MappingError as exc:
        messages.error(request, "; ".join(exc.problems))
        return redirect("profiles:import_detail", job_id=job_id)
    messages.success(request, "Import queued again.")
    return redirect("profiles:import_detail", job_id=job.id)


@login_required
@permission_required("profiles.browse_imports", raise_exception=True)
def import_error_report(request, job_id: int):
    """The error report as CSV (row, column, value, reason), formula-injection safe."""
    job = _job_for(request, job_id)
    if job.status not in ImportJob.FINAL_STATUSES:
        raise Http404("The error report is ready when the import has ended.")
    audit_record(actor=request.user, action="import.error_report_downloaded", object_type="import",
                 object_id=job.id, details={"errors": job.row_errors.count()})
    response = StreamingHttpResponse(services.error_report_rows(job=job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="import-{job.id}-errors.csv"'
    return response
