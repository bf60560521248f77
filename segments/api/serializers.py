"""Input and output serializers of the staff segments API (thin: the services validate meaning)."""

from rest_framework import serializers

from profiles.models import Source
from segments.evaluation import sentence
from segments.models import Segment, SegmentRun, WebhookDelivery


class SegmentInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=80, required=False)
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    kind = serializers.ChoiceField(choices=Segment.Kind.choices, required=False)
    definition = serializers.JSONField(required=False)
    schedule_minutes = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    is_realtime = serializers.BooleanField(required=False)
    exposed_sources = serializers.ListField(child=serializers.IntegerField(), required=False, max_length=100)
    webhook_url = serializers.CharField(required=False, allow_blank=True, max_length=500)
    webhook_on_enter = serializers.BooleanField(required=False)
    webhook_on_exit = serializers.BooleanField(required=False)
    required_purposes = serializers.ListField(child=serializers.CharField(max_length=60), required=False,
                                              max_length=10)


class SegmentSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True, default=None)
    exposed_sources = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    schedule = serializers.CharField(source="schedule_label", read_only=True)
    sentence = serializers.SerializerMethodField()

    class Meta:
        model = Segment
        fields = ["key", "name", "description", "kind", "definition", "definition_version", "sentence", "owner",
                  "is_active", "schedule_minutes", "schedule", "next_run_at", "is_realtime", "exposed_sources",
                  "required_purposes",
                  "webhook_url", "webhook_on_enter", "webhook_on_exit", "member_count", "membership_version",
                  "status", "last_error", "consecutive_failures", "computed_at", "compute_duration_ms",
                  "realtime_evaluated_at", "realtime_lag_ms", "created_at", "updated_at"]
        read_only_fields = fields

    def get_sentence(self, segment) -> str:
        if segment.kind != Segment.Kind.RULES or not segment.definition:
            return "A static list of uploaded people."
        return sentence(segment.definition)


class DefinitionSerializer(serializers.Serializer):
    definition = serializers.JSONField()


class PreviewSerializer(serializers.Serializer):
    size = serializers.IntegerField(allow_null=True)
    is_estimate = serializers.BooleanField()
    total_profiles = serializers.IntegerField()
    sentence = serializers.CharField()
    milliseconds = serializers.IntegerField()
    sample = serializers.ListField(child=serializers.DictField())


class DiffSerializer(serializers.Serializer):
    size = serializers.IntegerField()
    current_size = serializers.IntegerField()
    entering = serializers.IntegerField()
    leaving = serializers.IntegerField()
    entering_sample = serializers.ListField(child=serializers.CharField())
    leaving_sample = serializers.ListField(child=serializers.CharField())
    sentence = serializers.CharField()


class RunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SegmentRun
        fields = ["id", "status", "trigger", "requested_at", "started_at", "finished_at", "attempts",
                  "definition_version", "membership_version", "size", "entered", "exited", "duration_ms", "error"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = ["id", "event", "profile_count", "withheld_count", "status", "attempts", "next_attempt_at", "last_status_code",
                  "last_error", "created_at", "delivered_at"]
        read_only_fields = fields


class ShareSerializer(serializers.Serializer):
    permission = serializers.ChoiceField(choices=["view", "change"])
    user = serializers.CharField(required=False, max_length=150)
    group = serializers.CharField(required=False, max_length=150)
    grant = serializers.BooleanField(default=True)


class StaticUploadSerializer(serializers.Serializer):
    members = serializers.ListField(child=serializers.DictField(child=serializers.CharField(max_length=500)),
                                    max_length=100_000)
    mode = serializers.ChoiceField(choices=["replace", "add"], default="replace")


class MemberSerializer(serializers.Serializer):
    profile_id = serializers.CharField()
    name = serializers.CharField()
    email = serializers.CharField()
    country = serializers.CharField()
    city = serializers.CharField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    entered_at = serializers.DateTimeField()


def source_choices():
    return Source.objects.filter(is_active=True).order_by("name")
