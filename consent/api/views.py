"""HTTP API of the consent app.

Client-facing (write key or staff session): POST /v1/consent, POST /v1/consent/withdraw.
Staff (session, role-checked): /api/consent/profiles/<id>, /api/consent/records,
/api/consent/requests.
"""

import orjson
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotAuthenticated, ParseError, PermissionDenied, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import reference, selectors
from consent.api.auth import WriteKeyAuthentication
from consent.api.serializers import (
    DecisionSerializer,
    RecordOutSerializer,
    RequestInSerializer,
    RequestOutSerializer,
    WithdrawSerializer,
)
from consent.enforcement import profile_purposes
from consent.models import ConsentRecord, DataSubjectRequest
from consent.services import inputs, requests
from consent.services.audit import audit_record
from profiles.models import Profile, Source

MAX_BODY = 256 * 1024
MAX_BATCH = 100


def _error(code: str, message: str, status_code=400, **extra) -> Response:
    return Response({"success": False, "code": code, "message": message, **extra}, status=status_code)


class AnyContentTypeJSONParser(BaseParser):
    """JSON whatever the Content-Type says (CMP scripts send text/plain to avoid a preflight,
    as Segment's analytics.js does), with a size limit."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        length = int(request.META.get("CONTENT_LENGTH") or 0)
        if length > MAX_BODY:
            raise ParseError(f"body larger than {MAX_BODY // 1024} KB")
        raw = stream.read(MAX_BODY + 1) if stream is not None else b""
        if len(raw) > MAX_BODY:
            raise ParseError(f"body larger than {MAX_BODY // 1024} KB")
        try:
            return orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise ParseError("body is not valid JSON") from None


class WriteKeyOrStaff(BasePermission):
    """A write key, or a signed-in user allowed to record consent (CORS preflights pass)."""

    def has_permission(self, request, view):
        if request.method == "OPTIONS":
            return True
        if request.auth is not None and not isinstance(request.successful_authenticator, SessionAuthentication):
            return True
        if not request.user.is_authenticated:
            raise NotAuthenticated("Send the source's write key (HTTP Basic user) or sign in.")
        if not request.user.has_perm("consent.record_consent"):
            raise PermissionDenied("Your role may not record consent.")
        return True


def _allowed_origin(request, source_id: int | None) -> str:
    origin = request.headers.get("Origin", "")
    if not origin:
        return ""
    sources = Source.objects.filter(is_active=True, allowed_origins__contains=[origin])
    if source_id is not None:
        sources = sources.filter(pk=source_id)
    return origin if sources.exists() else ""


class ConsentApiView(APIView):
    authentication_classes = [WriteKeyAuthentication, SessionAuthentication]
    permission_classes = [WriteKeyOrStaff]
    parser_classes = [AnyContentTypeJSONParser]

    def options(self, request, *args, **kwargs):
        """CORS preflight for CMPs posting from a source's allowed origin."""
        response = Response(status=204)
        origin = _allowed_origin(request, None)
        if origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response["Access-Control-Max-Age"] = "600"
            response["Vary"] = "Origin"
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        key = getattr(request, "auth", None)
        origin = _allowed_origin(request, getattr(key, "source_id", None)) if key is not None else ""
        if origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Vary"] = "Origin"
        return response

    def body(self, request):
        data = request.data
        if not isinstance(data, dict):
            raise ValidationError({"body": "body must be a JSON object"})
        return data

    def consent_request(self, request, attrs: dict) -> inputs.ConsentRequest:
        """The service input; ConsentInputError for unusable identifiers."""
        if attrs.get("identifier"):
            subject = inputs.subject_from_identifier(attrs["identifier"]["kind"], attrs["identifier"]["value"])
        elif attrs.get("userId"):
            subject = inputs.subject_from_identifier("user_id", attrs["userId"])
        else:
            subject = inputs.subject_from_identifier("anonymous_id", attrs["anonymousId"])
        context = attrs.get("context") or {}
        staff = isinstance(request.successful_authenticator, SessionAuthentication)
        ip = context.get("ip") or (None if staff else request.META.get("REMOTE_ADDR"))
        return inputs.ConsentRequest(
            subject=subject, purposes=attrs.get("purposes") or {}, categories=attrs.get("categories") or {},
            cmp=attrs.get("cmp") or "segment",
            source=ConsentRecord.Source.STAFF if staff else attrs.get("source") or ConsentRecord.Source.WEB_BANNER,
            method=attrs.get("method", ""), notice=attrs.get("notice"), client_timestamp=attrs.get("timestamp"),
            evidence=inputs.evidence_from(page_url=(context.get("page") or {}).get("url", ""),
                                          user_agent=context.get("userAgent") or
                                          ("" if staff else request.headers.get("User-Agent", "")), ip=ip),
            tc_string=attrs.get("tcString", ""), gpc=attrs.get("gpc") or request.headers.get("Sec-GPC") == "1",
            actor=request.user if staff else None, actor_key_id=None if staff else request.auth.key_id)


def _records_out(result: inputs.RecordResult) -> list[dict]:
    keys = reference.purpose_keys_by_id()
    return [{"purpose": keys[item.record.purpose_id], "granted": item.record.granted, "sequence": item.sequence,
             "method": item.record.method} for item in result.appended]


class ConsentSetView(ConsentApiView):
    """Set (grant or withdraw) one or many purposes for one identifier, or a batch of such
    decisions ({"batch": [...]}, at most 100, all validated before any is recorded)."""

    @extend_schema(request=DecisionSerializer, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    def post(self, request):
        data = self.body(request)
        items = data.get("batch") if "batch" in data else [data]
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            return _error("invalid_batch", f"batch must be a list of 1 to {MAX_BATCH} decisions")
        prepared, errors = [], []
        for index, item in enumerate(items):
            serializer = DecisionSerializer(data=item if isinstance(item, dict) else {})
            if not serializer.is_valid():
                errors.append({"index": index, "code": "invalid", "errors": serializer.errors})
                continue
            try:
                prepared.append(self.consent_request(request, serializer.validated_data))
            except inputs.ConsentInputError as exc:
                errors.append({"index": index, "code": exc.code, "message": exc.message, "field": exc.field})
        if errors:
            if len(items) == 1 and "message" in errors[0]:
                return _error(errors[0]["code"], errors[0]["message"], field=errors[0]["field"])
            return _error("invalid", "Nothing was recorded: fix the decisions listed in errors.", errors=errors)
        try:
            with transaction.atomic():
                results = [inputs.consent_record(item) for item in prepared]
        except inputs.ConsentInputError as exc:
            return _error(exc.code, exc.message, field=exc.field)
        body = {"success": True, "records": [r for result in results for r in _records_out(result)],
                "unmapped_categories": sorted({c for result in results for c in result.unmapped_categories})}
        return Response(body, status=status.HTTP_200_OK)


class ConsentWithdrawView(ConsentApiView):
    """Withdraw purposes (or all) for one identifier."""

    @extend_schema(request=WithdrawSerializer, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    def post(self, request):
        serializer = WithdrawSerializer(data=self.body(request))
        serializer.is_valid(raise_exception=True)
        attrs = dict(serializer.validated_data)
        active = [key for key, info in reference.purposes().items() if info.is_active]
        attrs["purposes"] = dict.fromkeys(active if attrs.get("all") else attrs.get("purposes", []), False)
        attrs["method"] = ConsentRecord.Method.SAVE if not attrs.get("all") else ConsentRecord.Method.REJECT
        try:
            result = inputs.consent_record(self.consent_request(request, attrs))
        except inputs.ConsentInputError as exc:
            return _error(exc.code, exc.message, field=exc.field)
        return Response({"success": True, "records": _records_out(result)})


class StaffPermission(BasePermission):
    """A signed-in user with `permission` (set on the view)."""

    def has_permission(self, request, view):
        return bool(request.user.is_authenticated and request.user.has_perm(view.permission))


class ProfileConsentView(APIView):
    """Current consent of one profile per purpose (data team and compliance)."""

    permission_classes = [IsAuthenticated, StaffPermission]
    permission = "consent.view_profile_consent"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, profile_id):
        profile = get_object_or_404(Profile, id=profile_id)
        states = selectors.profile_consent_states(profile_id=profile.id)
        audit_record(actor=request.user, action="consent.viewed", object_type="profile", object_id=profile.id)
        return Response({"profile_id": str(profile.id), "purposes": profile_purposes(profile_id=profile.id),
                         "states": states})


class RecordListView(generics.ListAPIView):
    """Ledger records, newest first; filter by ?identifier_kind=&identifier= and ?purpose=."""

    permission_classes = [IsAuthenticated, StaffPermission]
    permission = "consent.view_ledger"
    serializer_class = RecordOutSerializer

    def get_queryset(self):
        params = self.request.query_params
        return selectors.ledger_queryset(query=params.get("identifier", ""), kind=params.get("identifier_kind", ""),
                                         purpose=params.get("purpose", ""))


class RequestListView(generics.ListCreateAPIView):
    """Data-subject requests: the queue (GET) and new requests (POST)."""

    permission_classes = [IsAuthenticated, StaffPermission]
    permission = "consent.manage_requests"
    serializer_class = RequestOutSerializer

    def get_queryset(self):
        return selectors.request_queryset(status=self.request.query_params.get("status", ""),
                                          type=self.request.query_params.get("type", ""))

    def create(self, request, *args, **kwargs):
        serializer = RequestInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        attrs = serializer.validated_data
        kind, value = (attrs["identifier"]["kind"], attrs["identifier"]["value"]) if attrs.get("identifier") \
            else ("profile_id", str(attrs["profile_id"]))
        try:
            created = requests.dsr_create(type=attrs["type"], identifier_kind=kind, identifier=value,
                                          actor=request.user, note=attrs.get("note", ""))
        except inputs.ConsentInputError as exc:
            return _error(exc.code, exc.message, field=exc.field)
        return Response(RequestOutSerializer(created).data, status=status.HTTP_201_CREATED)


class RequestDetailView(generics.RetrieveAPIView):
    permission_classes = [IsAuthenticated, StaffPermission]
    permission = "consent.manage_requests"
    serializer_class = RequestOutSerializer
    queryset = DataSubjectRequest.objects.all()
