"""Staff API for segments (DRF, OpenAPI via drf-spectacular). Thin: permission, service, answer."""

from django.contrib.auth.models import Group, User
from django.core.paginator import Paginator
from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from consent.services import audit_record
from segments import presets, selectors
from segments.api import serializers as s
from segments.errors import SegmentError
from segments.models import Segment
from segments.purposes import purpose_choices
from segments.services import definitions, static, webhooks
from segments.services.recompute import segment_recompute_request

LIST_PERMISSIONS = {"create": "segments.create"}
OBJECT_PERMISSIONS = {
    "retrieve": "segments.view", "runs": "segments.view", "history": "segments.view", "deliveries": "segments.view",
    "members": "segments.view", "update": "segments.change", "partial_update": "segments.change",
    "diff": "segments.change", "upload": "segments.change", "recompute": "segments.recompute",
    "destroy": "segments.archive", "restore": "segments.archive", "shares": "segments.share",
    "retry_delivery": "segments.change",
}


class SegmentPermission(permissions.BasePermission):
    """Roles via rules predicates; a segment the user may not see is filtered out (404)."""

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated and user.has_perm("segments.browse")):
            return False
        required = LIST_PERMISSIONS.get(view.action)
        return required is None or user.has_perm(required)

    def has_object_permission(self, request, view, obj):
        return request.user.has_perm(OBJECT_PERMISSIONS.get(view.action, "segments.change"), obj)


class SegmentViewSet(viewsets.GenericViewSet):
    """Segments: CRUD, preview, dry-run diff, recompute, members, sharing, static uploads."""

    lookup_field = "key"
    lookup_value_regex = "[a-z][a-z0-9_]{1,79}"
    permission_classes = [SegmentPermission]
    serializer_class = s.SegmentSerializer
    queryset = Segment.objects.none()

    def get_queryset(self):
        user = self.request.user
        segments = Segment.objects.visible_to(user).select_related("owner").prefetch_related("exposed_sources")
        if self.action == "list":
            return selectors.segment_list(user=user, query=self.request.query_params.get("q", "").strip()[:100],
                                          sort=self.request.query_params.get("sort", "key"),
                                          archived=self.request.query_params.get("archived") == "1"
                                          ).prefetch_related("exposed_sources")
        return segments

    def handle_exception(self, exc):
        if isinstance(exc, SegmentError):
            return Response(exc.as_dict(), status=exc.status)
        return super().handle_exception(exc)

    def _input(self, partial: bool) -> dict:
        serializer = s.SegmentInputSerializer(data=self.request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "exposed_sources" in data:
            data["exposed_source_ids"] = data.pop("exposed_sources")
        return data

    @extend_schema(parameters=[OpenApiParameter("q", str, description="search key, name, description"),
                               OpenApiParameter("sort", str, enum=list(selectors.SORTS)),
                               OpenApiParameter("archived", str, enum=["1"])])
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, key=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(request=s.SegmentInputSerializer, responses={201: s.SegmentSerializer})
    def create(self, request):
        data = self._input(partial=False)
        for required in ("key", "name"):
            if required not in data:
                raise SegmentError(f"missing_{required}", f"{required} is required.", field=required)
        if data.get("kind", Segment.Kind.RULES) == Segment.Kind.RULES and "definition" not in data:
            raise SegmentError("missing_definition", "definition is required for a rules segment.", field="definition")
        segment = definitions.segment_create(actor=request.user, **data)
        return Response(self.get_serializer(segment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.SegmentInputSerializer, responses=s.SegmentSerializer)
    def update(self, request, key=None):
        segment = definitions.segment_update(segment=self.get_object(), actor=request.user, **self._input(partial=False))
        return Response(self.get_serializer(segment).data)

    @extend_schema(request=s.SegmentInputSerializer, responses=s.SegmentSerializer)
    def partial_update(self, request, key=None):
        segment = definitions.segment_update(segment=self.get_object(), actor=request.user, **self._input(partial=True))
        return Response(self.get_serializer(segment).data)

    @extend_schema(description="Archive the segment (restorable with POST …/restore/).")
    def destroy(self, request, key=None):
        definitions.segment_archive(segment=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=s.SegmentSerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, key=None):
        segment = definitions.segment_restore(segment=self.get_object(), actor=request.user)
        return Response(self.get_serializer(segment).data)

    @extend_schema(request=s.DefinitionSerializer, responses=s.PreviewSerializer)
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """Estimated size, a sample and the sentence for a definition being edited."""
        serializer = s.DefinitionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        segment = None
        if request.data.get("segment"):
            segment = Segment.objects.visible_to(request.user).filter(key=str(request.data["segment"])).first()
        preview = selectors.segment_preview(definition=serializer.validated_data["definition"], segment=segment)
        masked = not request.user.has_perm("segments.view_personal_data")
        sample = [{"profile_id": str(row["id"]), "country": row["country"], "device": row["last_device_type"],
                   "city": row["city"][:1] + "***" if masked and row["city"] else row["city"],
                   "last_seen_at": row["last_seen_at"]} for row in preview.sample]
        return Response({"size": preview.size, "is_estimate": preview.is_estimate,
                         "total_profiles": preview.total_profiles, "sentence": preview.sentence,
                         "milliseconds": preview.milliseconds, "sample": sample})

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"])
    def templates(self, request):
        """Ready-made templates with their parameters and default definitions."""
        items = []
        for preset in presets.PRESETS.values():
            defaults = presets.preset_defaults(preset)
            items.append({"key": preset.key, "name": preset.name, "description": preset.description,
                          "schedule_minutes": preset.schedule_minutes,
                          "params": {name: {"label": p.label, "type": p.type, "default": defaults[name]}
                                     for name, p in preset.params.items()},
                          "definition": presets.preset_definition(preset.key, defaults)})
        return Response(items)

    @extend_schema(request=s.DefinitionSerializer, responses=s.DiffSerializer)
    @action(detail=True, methods=["post"])
    def diff(self, request, key=None):
        """Dry run: who would enter and leave if this definition were saved (nothing is written)."""
        serializer = s.DefinitionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(selectors.segment_diff(segment=self.get_object(),
                                               definition=serializer.validated_data["definition"]))

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def recompute(self, request, key=None):
        segment = self.get_object()
        if segment.kind != Segment.Kind.RULES or not segment.is_active:
            raise SegmentError("not_recomputable", "Only active rules segments are recomputed.")
        with transaction.atomic():
            run = segment_recompute_request(segment=segment, trigger="manual", actor=request.user)
        return Response({"run_id": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=s.RunSerializer(many=True))
    @action(detail=True, methods=["get"])
    def runs(self, request, key=None):
        return Response(s.RunSerializer(self.get_object().runs.all()[:50], many=True).data)

    @extend_schema(responses=s.DeliverySerializer(many=True))
    @action(detail=True, methods=["get"])
    def deliveries(self, request, key=None):
        return Response(s.DeliverySerializer(selectors.segment_deliveries(segment=self.get_object(), limit=100),
                                             many=True).data)

    @extend_schema(request=None, responses=s.DeliverySerializer)
    @action(detail=True, methods=["post"], url_path=r"deliveries/(?P<delivery_id>\d+)/retry")
    def retry_delivery(self, request, key=None, delivery_id=None):
        segment = self.get_object()
        delivery = segment.deliveries.filter(pk=delivery_id).first()
        if delivery is None:
            raise SegmentError("not_found", "No such delivery.", status=404)
        webhooks.webhook_retry(delivery=delivery)
        delivery.refresh_from_db()
        return Response(s.DeliverySerializer(delivery).data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def history(self, request, key=None):
        """The latest entries and exits, with the definition version that caused each."""
        rows = selectors.segment_history(segment=self.get_object(), limit=200)
        return Response([{"profile_id": str(row.profile_id), "kind": row.kind, "at": row.at, "cause": row.cause,
                          "definition_version": row.definition_version} for row in rows])

    @extend_schema(parameters=[OpenApiParameter("page", int)], responses=s.MemberSerializer(many=True))
    @action(detail=True, methods=["get"])
    def members(self, request, key=None):
        """Current members (50 per page); personal fields masked unless the role may see them."""
        segment = self.get_object()
        page = Paginator(selectors.segment_members(segment=segment), 50).get_page(request.query_params.get("page"))
        rows, masked = selectors.member_rows(memberships=page.object_list, user=request.user)
        if not masked:
            audit_record(actor=request.user, action="segment.members_viewed", object_type="segment",
                         object_id=segment.key, details={"rows": len(rows), "page": page.number, "via": "api"})
        return Response({"count": page.paginator.count, "page": page.number, "pages": page.paginator.num_pages,
                         "masked": masked, "results": s.MemberSerializer(rows, many=True).data})

    @extend_schema(request=s.StaticUploadSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["post"])
    def upload(self, request, key=None):
        """Static segments: set (replace) or extend (add) members from ids / emails; a row-level report."""
        segment = self.get_object()
        serializer = s.StaticUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        entries = []
        for index, item in enumerate(serializer.validated_data["members"], start=1):
            if len(item) != 1:
                entries.append((index, "(several)" if item else "(none)", ""))
                continue
            (kind, value), = item.items()
            entries.append((index, kind, value))
        report = static.static_members_replace(segment=segment, actor=request.user, entries=entries,
                                               mode=serializer.validated_data["mode"])
        return Response(report.__dict__)

    @extend_schema(request=s.ShareSerializer, responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get", "post"])
    def shares(self, request, key=None):
        """Who else may view or change this segment (guardian grants); POST grants or revokes."""
        segment = self.get_object()
        if request.method == "POST":
            serializer = s.ShareSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            user = group = None
            if data.get("user"):
                user = User.objects.filter(username=data["user"], is_active=True).first()
                if user is None:
                    raise SegmentError("unknown_user", "No active user has that name.", field="user")
            if data.get("group"):
                group = Group.objects.filter(name=data["group"]).first()
                if group is None:
                    raise SegmentError("unknown_group", "No group has that name.", field="group")
            definitions.segment_share(segment=segment, actor=request.user, permission=data["permission"],
                                      user=user, group=group, grant=data["grant"])
        return Response(_grants(segment))

    # -- pickers ------------------------------------------------------------------------------
    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/events")
    def catalog_events(self, request):
        return Response(selectors.catalog_events())

    @extend_schema(parameters=[OpenApiParameter("event", str, required=True)], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/properties")
    def catalog_properties(self, request):
        return Response(selectors.catalog_properties(event=request.query_params.get("event", "")[:200]))

    @extend_schema(parameters=[OpenApiParameter("event", str, required=True),
                               OpenApiParameter("property", str, required=True)], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/property-values")
    def catalog_property_values(self, request):
        return Response(selectors.catalog_property_values(event=request.query_params.get("event", "")[:200],
                                                          prop=request.query_params.get("property", "")[:300]))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/traits")
    def catalog_traits(self, request):
        return Response(selectors.catalog_traits())

    @extend_schema(parameters=[OpenApiParameter("field", str, required=True)], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/trait-values")
    def catalog_trait_values(self, request):
        return Response(selectors.catalog_trait_values(field=request.query_params.get("field", "")[:100]))

    @extend_schema(parameters=[OpenApiParameter("field", str, required=True)], responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/context-values")
    def catalog_context_values(self, request):
        return Response(selectors.catalog_context_values(field=request.query_params.get("field", "")[:40]))

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/categories")
    def catalog_categories(self, request):
        return Response(selectors.catalog_categories())

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/purposes")
    def catalog_purposes(self, request):
        """Active consent purposes, for consent conditions and required purposes."""
        return Response(purpose_choices())

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=False, methods=["get"], url_path="catalog/segments")
    def catalog_segments(self, request):
        visible = Segment.objects.visible_to(request.user).filter(is_active=True).order_by("key")
        return Response([{"value": key, "label": name, "count": count}
                         for key, name, count in visible.values_list("key", "name", "member_count")])


def _grants(segment: Segment) -> dict:
    from guardian.shortcuts import get_groups_with_perms, get_users_with_perms

    users = get_users_with_perms(segment, attach_perms=True, with_superusers=False, with_group_users=False)
    groups = get_groups_with_perms(segment, attach_perms=True)
    label = {"view_segment": "view", "change_segment": "change"}
    return {"owner": segment.owner.username if segment.owner else None,
            "users": sorted(({"user": user.username, "permissions": sorted(label[p] for p in perms if p in label)}
                             for user, perms in users.items()), key=lambda row: row["user"]),
            "groups": sorted(({"group": group.name, "permissions": sorted(label[p] for p in perms if p in label)}
                              for group, perms in groups.items()), key=lambda row: row["group"])}
