"""Staff REST API of imports (session auth): upload (multipart), mapping, preview, start, cancel,
retry, history, error report; saved mappings. Errors are JSON with `code` and `message`."""

import json

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from consent.services import audit_record
from profiles.imports import fields as F
from profiles.imports import selectors, services
from profiles.imports.formats import ImportFileError
from profiles.imports.mapping import MappingError
from profiles.models import ImportJob, ImportMapping, Source


class CanBrowseImports(BasePermission):
    message = "Your role may not see imports."

    def has_permission(self, request, view):
        return request.user.has_perm("profiles.browse_imports")


class CanRunImports(BasePermission):
    message = "Your role may not run imports."

    def has_permission(self, request, view):
        return request.user.has_perm("profiles.run_imports")


class CanReadHistoryOrRun(BasePermission):
    """Reading the history: data team, admins, compliance; uploading: data team and admins."""

    message = "Your role may not do this with imports."

    def has_permission(self, request, view):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return request.user.has_perm("profiles.browse_imports")
        return request.user.has_perm("profiles.run_imports")


class ImportProblem(APIException):
    status_code = 400
    default_code = "invalid_import"

    def __init__(self, code: str, message: str, problems: list[str] | None = None):
        super().__init__(detail=message, code=code)
        self.problems = problems or []


class ImportJobSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="source.name")
    created_by = serializers.CharField(source="created_by.username", default=None)
    mapping_name = serializers.CharField(source="mapping.name", default=None)
    progress = serializers.SerializerMethodField()
    error_report_url = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = ["id", "kind", "source", "status", "file_name", "file_size", "file_format", "encoding", "delimiter",
                  "headers", "columns", "options", "mapping_name", "created_by", "created_at", "started_at",
                  "finished_at", "rows_total", "rows_done", "rows_loaded", "rows_rejected", "rows_duplicate",
                  "profiles_matched", "profiles_created", "transactions_created", "error_message", "progress",
                  "error_report_url"]

    def get_progress(self, job) -> dict:
        progress = selectors.import_progress(job=job)
        return {"percent": progress.percent, "phase": progress.phase, "rows_done": progress.rows_done,
                "rows_total": progress.rows_total, "rows_per_second": progress.rate, "eta_seconds": progress.eta_seconds}

    def get_error_report_url(self, job) -> str | None:
        if job.status not in ImportJob.FINAL_STATUSES:
            return None
        return self.context["request"].build_absolute_uri(f"/api/imports/{job.id}/errors.csv")


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    kind = serializers.ChoiceField(choices=F.KINDS)
    source = serializers.CharField(help_text="source name or id")
    mapping = serializers.CharField(required=False, allow_blank=True, help_text="saved mapping name")
    columns = serializers.JSONField(required=False, binary=True, help_text='{"File header": "field"}, merged over the suggestion')
    options = serializers.JSONField(required=False, binary=True)
    start = serializers.BooleanField(required=False, default=False)


class ConfigureSerializer(serializers.Serializer):
    columns = serializers.DictField(child=serializers.CharField(allow_blank=True))
    options = serializers.DictField(required=False, default=dict)
    save_as = serializers.CharField(required=False, allow_blank=True, default="")


class MappingSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportMapping
        fields = ["id", "name", "kind", "columns", "options", "updated_at"]


def _json_field(value, name):
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ImportProblem("invalid_json", f"`{name}` is not valid JSON.") from None
    if not isinstance(value, dict):
        raise ImportProblem("invalid_json", f"`{name}` must be a JSON object.")
    return value


def _problem(exc) -> ImportProblem:
    if isinstance(exc, MappingError):
        return ImportProblem("invalid_mapping", " ".join(exc.problems), exc.problems)
    return ImportProblem(exc.code, exc.message)


def _job(request, job_id: int) -> ImportJob:
    return get_object_or_404(selectors.import_jobs_visible_to(request.user), pk=job_id)


class ImportListView(APIView):
    """GET: import history (filters `status`, `kind`, `q`). POST (multipart): upload a file."""

    permission_classes = [IsAuthenticated, CanReadHistoryOrRun]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(operation_id="imports_list", responses=ImportJobSerializer(many=True),
                   parameters=[OpenApiParameter("q", str), OpenApiParameter("status", str),
                               OpenApiParameter("kind", str, enum=list(F.KINDS))])
    def get(self, request):
        from rest_framework.pagination import PageNumberPagination

        jobs = selectors.import_job_list(user=request.user, query=request.query_params.get("q", ""),
                                         status=request.query_params.get("status", ""),
                                         kind=request.query_params.get("kind", ""))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response(ImportJobSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request={"multipart/form-data": UploadSerializer}, responses={201: ImportJobSerializer})
    def post(self, request):
        data = UploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        source_key = values["source"]
        source = Source.objects.filter(is_active=True).filter(
            **({"pk": int(source_key)} if source_key.isdigit() else {"name": source_key})).first()
        if source is None:
            raise ImportProblem("unknown_source", f"No active source {source_key!r}.")
        mapping = None
        if values.get("mapping"):
            mapping = ImportMapping.objects.filter(name=values["mapping"], kind=values["kind"]).first()
            if mapping is None:
                raise ImportProblem("unknown_mapping", f"No saved {values['kind']} mapping named {values['mapping']!r}.")
        columns, options = _json_field(values.get("columns"), "columns"), _json_field(values.get("options"), "options")
        upload = values["file"]
        try:
            job = services.import_upload(user=request.user, source=source, kind=values["kind"], file_name=upload.name,
                                         chunks=upload.chunks(), mapping=mapping)
            if columns or options:
                job = services.import_configure(job=job, user=request.user, columns={**job.columns, **columns},
                                                options={**job.options, **options})
            if values["start"]:
                job = services.import_start(job=job, user=request.user)
        except (ImportFileError, MappingError) as exc:
            raise _problem(exc) from None
        return Response(ImportJobSerializer(job, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ImportDetailView(APIView):
    permission_classes = [IsAuthenticated, CanBrowseImports]

    @extend_schema(responses=ImportJobSerializer)
    def get(self, request, job_id: int):
        job = services.import_liveness_check(job=_job(request, job_id))
        return Response(ImportJobSerializer(job, context={"request": request}).data)


class ImportMappingView(APIView):
    """POST {columns, options, save_as}: set the mapping of an uploaded file."""

    permission_classes = [IsAuthenticated, CanRunImports]
    parser_classes = [JSONParser]

    @extend_schema(request=ConfigureSerializer, responses=ImportJobSerializer)
    def post(self, request, job_id: int):
        job = _job(request, job_id)
        data = ConfigureSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = services.import_configure(job=job, user=request.user, **data.validated_data)
        except (ImportFileError, MappingError) as exc:
            raise _problem(exc) from None
        return Response(ImportJobSerializer(job, context={"request": request}).data)


class ImportPreviewView(APIView):
    """GET: the first 20 rows after the job's mapping and cleaning, with each row's problems."""

    permission_classes = [IsAuthenticated, CanRunImports]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, job_id: int):
        job = _job(request, job_id)
        try:
            labels, rows = services.import_preview(job=job, columns=job.columns, options=job.options)
        except (ImportFileError, MappingError) as exc:
            raise _problem(exc) from None
        return Response({"columns": labels, "rows": [{"row": r.row_number, "values": r.values, "problems": r.errors}
                                                      for r in rows]})


class ImportActionView(APIView):
    """POST start / cancel / retry."""

    permission_classes = [IsAuthenticated, CanRunImports]
    action = ""

    @extend_schema(request=None, responses={202: ImportJobSerializer})
    def post(self, request, job_id: int):
        job = _job(request, job_id)
        try:
            if self.action == "start":
                job = services.import_start(job=job, user=request.user)
            elif self.action == "cancel":
                if job.status in ImportJob.FINAL_STATUSES:
                    raise ImportProblem("already_ended", "This import has already ended.")
                job = services.import_cancel(job=job, user=request.user)
            else:
                job = services.import_retry(job=job, user=request.user)
        except (ImportFileError, MappingError) as exc:
            raise _problem(exc) from None
        return Response(ImportJobSerializer(job, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED)


class ImportErrorReportView(APIView):
    """GET: the error report as CSV (row, column, value, reason)."""

    permission_classes = [IsAuthenticated, CanBrowseImports]

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, job_id: int):
        job = _job(request, job_id)
        if job.status not in ImportJob.FINAL_STATUSES:
            raise NotFound("The error report is ready when the import has ended.")
        audit_record(actor=request.user, action="import.error_report_downloaded", object_type="import",
                     object_id=job.id, details={"errors": job.row_errors.count()})
        response = StreamingHttpResponse(services.error_report_rows(job=job), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="import-{job.id}-errors.csv"'
        return response


class MappingListView(APIView):
    """GET saved mappings (filter `kind`); POST {name, kind, columns, options} to save one."""

    permission_classes = [IsAuthenticated, CanRunImports]
    parser_classes = [JSONParser]

    @extend_schema(responses=MappingSerializer(many=True), parameters=[OpenApiParameter("kind", str)])
    def get(self, request):
        mappings = selectors.import_mapping_list(kind=request.query_params.get("kind", ""))
        return Response(MappingSerializer(mappings, many=True).data)

    @extend_schema(request=MappingSerializer, responses={201: MappingSerializer})
    def post(self, request):
        data = MappingSerializer(data=request.data)
        if not data.is_valid():
            raise ValidationError(data.errors)
        values = data.validated_data
        if values["kind"] not in F.KINDS:
            raise ImportProblem("invalid_kind", f"Kind must be one of {', '.join(F.KINDS)}.")
        try:
            mapping = services.import_mapping_save(name=values["name"], kind=values["kind"], columns=values["columns"],
                                                   options=values.get("options") or {}, user=request.user)
        except MappingError as exc:
            raise _problem(exc) from None
        return Response(MappingSerializer(mapping).data, status=status.HTTP_201_CREATED)
