"""Compliance screens: consent overview, ledger browser (+ CSV), record detail, chain
verification, recording a person's consent, CMP mappings, the request queue and the audit log.
Every view checks its permission first; staff looking at personal data is audited."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.functional import cached_property
from django.views.decorators.http import require_POST
from rules.contrib.views import permission_required

from cdp.csvexport import csv_response
from consent import forms, reference, selectors
from consent.models import (
    CmpCategoryMapping,
    ConsentRecord,
    DataSubjectRequest,
    ErasureReceipt,
    NoticeVersion,
    SubjectLink,
)
from consent.services import inputs, ledger, person, requests
from consent.services.audit import audit_record

PAGE_SIZE = 50
EXPORT_LIMIT = 1_000_000


class _KnownCountPaginator(Paginator):
    """The unfiltered ledger's size is its head sequence (gapless): no count(*) over millions."""

    def __init__(self, *args, known_count: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._known_count = known_count

    @cached_property
    def count(self):
        return self._known_count if self._known_count is not None else super().count


def _querystring(request, drop=("page",)) -> str:
    return urlencode([(k, v) for k, v in request.GET.items() if k not in drop and v])


@login_required
@permission_required("consent.browse", raise_exception=True)
def consent_home(request):
    context = {"overview": selectors.consent_overview(), "notices": NoticeVersion.objects.order_by("key", "-id")[:20],
               "open_requests": selectors.request_queryset(open_only=True).count(),
               "records": ledger.ledger_head()[0]}
    return render(request, "consent/home.html", context)


# -- ledger -----------------------------------------------------------------------------------

@login_required
@permission_required("consent.view_ledger", raise_exception=True)
def ledger_list(request):
    form = forms.LedgerFilterForm(request.GET or None)
    filters = form.filters()
    unfiltered = not any(filters.values())
    page = _KnownCountPaginator(selectors.ledger_queryset(**filters), PAGE_SIZE,
                                known_count=ledger.ledger_head()[0] if unfiltered else None).get_page(
        request.GET.get("page"))
    if filters["query"]:
        audit_record(actor=request.user, action="consent.ledger_searched", object_type="ledger",
                     details={"matches": page.paginator.count, "purpose": filters["purpose"]})
    return render(request, "consent/ledger.html", {"form": form, "page": page, "filters": filters,
                                                   "querystring": _querystring(request)})


@login_required
@permission_required("consent.export_ledger", raise_exception=True)
def ledger_export(request):
    form = forms.LedgerFilterForm(request.GET or None)
    records = selectors.ledger_queryset(**form.filters())[:EXPORT_LIMIT]
    audit_record(actor=request.user, action="consent.ledger_exported", object_type="ledger",
                 details={"filtered_by_person": bool(form.filters()["query"]), "purpose": form.filters()["purpose"]})
    header = ["sequence", "captured_at", "decided_at", "client_timestamp", "identifier_kind", "identifier_hash",
              "purpose", "granted", "source", "method", "notice", "page_url", "user_agent", "tc_string", "actor",
              "actor_key", "prev_hash", "record_hash"]

    def rows():
        for record in records.iterator(chunk_size=2000):
            notice = record.notice
            yield [record.sequence, record.captured_at, record.decided_at, record.client_timestamp,
                   record.subject_kind, bytes(record.subject_hash).hex(), record.purpose.key,
                   "granted" if record.granted else "withdrawn", record.source, record.method,
                   f"{notice.key} v{notice.version} ({notice.language})" if notice else "", record.page_url,
                   record.user_agent, record.tc_string, record.actor_id, record.actor_key_id,
                   bytes(record.prev_hash).hex(), bytes(record.record_hash).hex()]

    return csv_response(f"consent-ledger-{timezone.now():%Y%m%d-%H%M}.csv", header, rows())


@login_required
@permission_required("consent.view_ledger", raise_exception=True)
def record_detail(request, sequence: int):
    record = get_object_or_404(ConsentRecord.objects.select_related("purpose", "notice", "actor"), sequence=sequence)
    link = SubjectLink.objects.filter(subject_kind=record.subject_kind, subject_hash=record.subject_hash).first()
    audit_record(actor=request.user, action="consent.record_viewed", object_type="consent_record",
                 object_id=record.sequence)
    return render(request, "consent/record_detail.html", {
        "record": record, "profile_id": link.profile_id if link else None,
        "subject_hash": bytes(record.subject_hash).hex(), "record_hash": bytes(record.record_hash).hex(),
        "prev_hash": bytes(record.prev_hash).hex(),
        "ip_hash": bytes(record.ip_hash).hex() if record.ip_hash is not None else "",
        "back": request.GET.get("back", "")})


@login_required
@permission_required("consent.verify_ledger", raise_exception=True)
def ledger_verify(request):
    result = None
    if request.method == "POST":
        result = ledger.ledger_verify()
        audit_record(actor=request.user, action="consent.ledger_verified", object_type="ledger",
                     object_id=result.last_sequence,
                     details={"intact": result.is_intact, "records": result.records_checked,
                              "first_broken": result.first_broken.sequence if result.first_broken else None,
                              "via": "screen"})
    history = selectors.audit_queryset(action="consent.ledger_verified")[:10]
    return render(request, "consent/verify.html", {"result": result, "heads": ledger.ledger_heads()[:10],
                                                   "history": history, "head": ledger.ledger_head()[0]})


# -- a person's consent -----------------------------------------------------------------------

def _person_context(query: str, kind: str):
    """The person a search means: (person or None, the identifier kind used, message)."""
    if not query:
        return None, ""
    kinds = [kind] if kind else ["email", "phone", "user_id", "crm_id", "anonymous_id", "profile_id"]
    for candidate in kinds:
        try:
            found = person.person_find(kind=candidate, value=query)
        except person.PersonNotFound:
            continue
        if found.profile_ids or kind:
            return found, candidate
    return None, ""


@login_required
@permission_required("consent.record_consent", raise_exception=True)
def person_consent(request):
    query = request.GET.get("q", "").strip()
    kind = request.GET.get("kind", "")
    found, used_kind = _person_context(query, kind)
    form = forms.PersonConsentForm(request.POST if request.method == "POST" else None)
    if found and request.method == "POST" and form.is_valid():
        subject = (inputs.subject_for_profile(found.primary_profile_id) if found.primary_profile_id
                   else inputs.Subject(found.identifiers[0][0], found.identifiers[0][2]))
        try:
            inputs.consent_record(inputs.ConsentRequest(
                subject=subject, purposes=form.decisions(), source=ConsentRecord.Source.STAFF,
                notice=form.cleaned_data["notice"].pk if form.cleaned_data["notice"] else None, actor=request.user,
                details={"note": form.cleaned_data["note"]} if form.cleaned_data["note"] else {}))
        except inputs.ConsentInputError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Recorded {len(form.decisions())} decision(s).")
            return redirect(f"{request.path}?{urlencode({'q': query, 'kind': kind})}")
    context = {"query": query, "kind": kind, "person": found, "used_kind": used_kind, "form": form,
               "kinds": forms.KIND_CHOICES}
    if found:
        context["states"] = (selectors.profile_consent_states(profile_id=found.primary_profile_id)
                             if found.primary_profile_id else None)
        context["history"] = requests.consent_history_records(found)[:20]
        audit_record(actor=request.user, action="consent.viewed", object_type="profile" if found.primary_profile_id
                     else "subject", object_id=found.primary_profile_id or used_kind)
    return render(request, "consent/person.html", context)


# -- CMP mappings -----------------------------------------------------------------------------

@login_required
@permission_required("consent.manage_mappings", raise_exception=True)
def mapping_list(request):
    form = forms.MappingForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        mapping = form.save()
        reference.cache_clear()
        audit_record(actor=request.user, action="consent.mapping_added", object_type="cmp_mapping",
                     object_id=mapping.pk)
        messages.success(request, f"Mapped {mapping.cmp}:{mapping.category} to {mapping.purpose.name}.")
        return redirect("consent:mappings")
    mappings = CmpCategoryMapping.objects.select_related("purpose").order_by("cmp", "category", "purpose__key")
    return render(request, "consent/mappings.html", {"form": form, "mappings": mappings})


@login_required
@permission_required("consent.manage_mappings", raise_exception=True)
@require_POST
def mapping_delete(request, pk: int):
    mapping = get_object_or_404(CmpCategoryMapping, pk=pk)
    mapping.delete()
    reference.cache_clear()
    audit_record(actor=request.user, action="consent.mapping_removed", object_type="cmp_mapping", object_id=pk)
    messages.success(request, "Mapping removed.")
    return redirect("consent:mappings")


# -- data-subject requests --------------------------------------------------------------------

@login_required
@permission_required("consent.manage_requests", raise_exception=True)
def request_list(request):
    form = forms.RequestCreateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            created = requests.dsr_create(type=form.cleaned_data["type"],
                                          identifier_kind=form.cleaned_data["identifier_kind"],
                                          identifier=form.cleaned_data["identifier"], actor=request.user,
                                          note=form.cleaned_data["note"])
        except inputs.ConsentInputError as exc:
            form.add_error("identifier", exc.message)
        else:
            messages.success(request, f"{created.reference} registered, due {created.due_at:%Y-%m-%d}.")
            return redirect("consent:request_detail", pk=created.pk)
    status, type_ = request.GET.get("status", ""), request.GET.get("type", "")
    page = Paginator(selectors.request_queryset(status=status, type=type_), PAGE_SIZE).get_page(
        request.GET.get("page"))
    return render(request, "consent/requests.html", {
        "form": form, "page": page, "status": status, "type": type_, "now": timezone.now(),
        "statuses": DataSubjectRequest.Status.choices, "types": DataSubjectRequest.Type.choices,
        "querystring": _querystring(request)})


def _request_context(dsr: DataSubjectRequest, **extra) -> dict:
    return {"dsr": dsr, "overdue": requests.request_is_overdue(dsr), "now": timezone.now(),
            "receipts": ErasureReceipt.objects.filter(request=dsr).select_related("performed_by"),
            "reject_form": forms.RejectForm(), "confirm_form": forms.ConfirmForm(reference=dsr.reference),
            "rectify_form": forms.RectifyForm(), **extra}


@login_required
@permission_required("consent.manage_requests", raise_exception=True)
def request_detail(request, pk: int):
    dsr = get_object_or_404(DataSubjectRequest.objects.select_related("handler", "created_by"), pk=pk)
    template = "consent/_request_status.html" if request.htmx else "consent/request_detail.html"
    return render(request, template, _request_context(dsr))


@login_required
@permission_required("consent.manage_requests", raise_exception=True)
@require_POST
def request_action(request, pk: int, action: str):
    dsr = get_object_or_404(DataSubjectRequest, pk=pk)
    try:
        if action == "assign":
            requests.dsr_assign(request=dsr, actor=request.user)
            messages.success(request, "You handle this request now.")
        elif action == "export":
            requests.dsr_access_start(request=dsr, actor=request.user)
            messages.success(request, "Export queued: the file appears here when it is ready.")
        elif action == "reject":
            form = forms.RejectForm(request.POST)
            if not form.is_valid():
                return render(request, "consent/request_detail.html", _request_context(dsr, reject_form=form),
                              status=400)
            requests.dsr_reject(request=dsr, actor=request.user, reason=form.cleaned_data["reason"])
            messages.success(request, "Request rejected.")
        elif action in ("erase", "anonymise"):
            form = forms.ConfirmForm(request.POST, reference=dsr.reference)
            if not form.is_valid():
                return render(request, "consent/request_detail.html", _request_context(dsr, confirm_form=form),
                              status=400)
            outcome = (requests.dsr_erase if action == "erase" else requests.dsr_anonymise)(request=dsr,
                                                                                          actor=request.user)
            messages.success(request, f"Done: receipt {outcome.receipt_id}.")
        elif action == "rectify":
            form = forms.RectifyForm(request.POST)
            form.is_valid()
            changes = {name: value for name, value in form.cleaned_data.items() if value}
            if not dsr.profile_id or not changes:
                form.add_error(None, "Fill in the corrected values (the request must concern a known profile).")
                return render(request, "consent/request_detail.html", _request_context(dsr, rectify_form=form),
                              status=400)
            changed = requests.profile_rectify(profile_id=dsr.profile_id, changes=changes, actor=request.user,
                                               request=dsr)
            messages.success(request, f"Rectified: {', '.join(changed) or 'nothing changed'}.")
        else:
            raise Http404("unknown action")
    except (requests.RequestError, inputs.ConsentInputError) as exc:
        messages.error(request, str(exc))
    return redirect("consent:request_detail", pk=dsr.pk)


@login_required
@permission_required("consent.manage_requests", raise_exception=True)
def request_download(request, pk: int):
    dsr = get_object_or_404(DataSubjectRequest, pk=pk)
    try:
        data = requests.dsr_result_read(request=dsr, actor=request.user)
    except requests.RequestError as exc:
        raise Http404(str(exc)) from None
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{dsr.reference}-access.zip"'
    return response


# -- audit log --------------------------------------------------------------------------------

@login_required
@permission_required("consent.view_audit", raise_exception=True)
def audit_list(request):
    form = forms.AuditFilterForm(request.GET or None)
    page = Paginator(selectors.audit_queryset(**form.filters()), PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "consent/audit.html", {"form": form, "page": page, "actions": selectors.audit_actions(),
                                                  "querystring": _querystring(request)})


@login_required
@permission_required("consent.view_audit", raise_exception=True)
def audit_export(request):
    form = forms.AuditFilterForm(request.GET or None)
    entries = selectors.audit_queryset(**form.filters())[:EXPORT_LIMIT]
    audit_record(actor=request.user, action="audit.exported", object_type="audit_log")

    def rows():
        for entry in entries.iterator(chunk_size=2000):
            yield [entry.at, entry.actor.username if entry.actor else "", entry.actor_key_id, entry.action,
                   entry.object_type, entry.object_id, entry.details, entry.request_id]

    return csv_response(f"audit-log-{timezone.now():%Y%m%d-%H%M}.csv",
                        ["at", "actor", "api_key", "action", "object_type", "object_id", "details", "request_id"],
                        rows())
