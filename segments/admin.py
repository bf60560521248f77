from django.contrib import admin

from segments.models import (
    Membership,
    MembershipChange,
    RealtimeChange,
    Segment,
    SegmentRun,
    Timer,
    WebhookDelivery,
)


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "kind", "owner", "member_count", "status", "computed_at", "is_active")
    list_filter = ("kind", "status", "is_active")
    search_fields = ("key", "name")
    readonly_fields = ("membership_version", "member_count", "computed_at", "computed_definition_version",
                       "compute_duration_ms", "event_names", "trait_names", "depends_on")
    exclude = ("webhook_secret",)


@admin.register(SegmentRun)
class SegmentRunAdmin(admin.ModelAdmin):
    list_display = ("id", "segment", "status", "trigger", "requested_at", "duration_ms", "size", "entered", "exited")
    list_filter = ("status", "trigger")
    list_select_related = ("segment",)


class _ReadOnly(admin.ModelAdmin):
    """Memberships and their history are written by the services only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Membership)
class MembershipAdmin(_ReadOnly):
    list_display = ("segment", "profile", "version_from", "version_to", "entered_at")
    raw_id_fields = ("segment", "profile")
    list_select_related = ("segment",)


@admin.register(MembershipChange)
class MembershipChangeAdmin(_ReadOnly):
    list_display = ("segment", "profile", "kind", "at", "definition_version", "cause")
    list_filter = ("kind", "cause")
    list_select_related = ("segment",)


@admin.register(Timer)
class TimerAdmin(_ReadOnly):
    list_display = ("segment", "profile", "due_at")
    list_select_related = ("segment",)


@admin.register(RealtimeChange)
class RealtimeChangeAdmin(_ReadOnly):
    list_display = ("profile_id", "event_names", "trait_names", "created_at")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly):
    list_display = ("segment", "event", "status", "attempts", "withheld_count", "last_status_code", "created_at")
    list_filter = ("status", "event")
    list_select_related = ("segment",)
