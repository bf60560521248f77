"""Input and output shapes of the consent API."""

from rest_framework import serializers

from consent.models import ConsentRecord, DataSubjectRequest
from consent.services.inputs import IDENTIFIER_KINDS

MAX_PURPOSES = 50


class IdentifierSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=IDENTIFIER_KINDS)
    value = serializers.CharField(max_length=200, trim_whitespace=True)


class PageSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=4000, required=False, allow_blank=True)


class EvidenceSerializer(serializers.Serializer):
    page = PageSerializer(required=False)
    userAgent = serializers.CharField(max_length=2000, required=False, allow_blank=True)  # noqa: N815 - wire name
    ip = serializers.CharField(max_length=64, required=False, allow_blank=True)


def _bool_map(value, name):
    if not isinstance(value, dict):
        raise serializers.ValidationError(f"{name} must be an object of name: true/false")
    if len(value) > MAX_PURPOSES:
        raise serializers.ValidationError(f"at most {MAX_PURPOSES} entries")
    for key, granted in value.items():
        if not isinstance(granted, bool):
            raise serializers.ValidationError(f"{str(key)[:60]!r} must be true or false")
    return value


class DecisionSerializer(serializers.Serializer):
    """One person's decision: an identifier and purposes (ours), CMP categories or a TC string."""

    identifier = IdentifierSerializer(required=False)
    userId = serializers.CharField(max_length=200, required=False)  # noqa: N815 - Segment's wire names
    anonymousId = serializers.CharField(max_length=200, required=False)  # noqa: N815
    purposes = serializers.JSONField(required=False)
    categories = serializers.JSONField(required=False)
    cmp = serializers.SlugField(max_length=40, required=False, default="segment")
    tcString = serializers.CharField(max_length=20000, required=False, allow_blank=True)  # noqa: N815
    method = serializers.ChoiceField(choices=[m for m in ConsentRecord.Method.values
                                              if m not in ("import", "merge")], required=False)
    source = serializers.ChoiceField(choices=[ConsentRecord.Source.WEB_BANNER, ConsentRecord.Source.API],
                                     required=False)
    notice = serializers.JSONField(required=False)
    timestamp = serializers.DateTimeField(required=False)
    context = EvidenceSerializer(required=False)
    gpc = serializers.BooleanField(required=False, default=False)

    def validate_purposes(self, value):
        return _bool_map(value, "purposes")

    def validate_categories(self, value):
        return _bool_map(value, "categories")

    def validate(self, attrs):
        if not (attrs.get("identifier") or attrs.get("userId") or attrs.get("anonymousId")):
            raise serializers.ValidationError({"identifier": "give identifier {kind, value}, userId or anonymousId"})
        if not (attrs.get("purposes") or attrs.get("categories") or attrs.get("tcString") or attrs.get("gpc")):
            raise serializers.ValidationError({"purposes": "give purposes, categories, tcString or gpc"})
        return attrs


class WithdrawSerializer(serializers.Serializer):
    identifier = IdentifierSerializer(required=False)
    userId = serializers.CharField(max_length=200, required=False)  # noqa: N815
    anonymousId = serializers.CharField(max_length=200, required=False)  # noqa: N815
    purposes = serializers.ListField(child=serializers.SlugField(max_length=60), required=False,
                                     max_length=MAX_PURPOSES)
    all = serializers.BooleanField(required=False, default=False)
    notice = serializers.JSONField(required=False)
    context = EvidenceSerializer(required=False)

    def validate(self, attrs):
        if not (attrs.get("identifier") or attrs.get("userId") or attrs.get("anonymousId")):
            raise serializers.ValidationError({"identifier": "give identifier {kind, value}, userId or anonymousId"})
        if not attrs.get("purposes") and not attrs.get("all"):
            raise serializers.ValidationError({"purposes": "name the purposes to withdraw, or all: true"})
        return attrs


class RecordOutSerializer(serializers.ModelSerializer):
    purpose = serializers.SlugRelatedField(slug_field="key", read_only=True)
    subject_hash = serializers.SerializerMethodField()
    record_hash = serializers.SerializerMethodField()
    prev_hash = serializers.SerializerMethodField()

    class Meta:
        model = ConsentRecord
        fields = ["sequence", "purpose", "granted", "source", "method", "subject_kind", "subject_hash", "notice",
                  "captured_at", "client_timestamp", "decided_at", "page_url", "tc_string", "actor", "actor_key",
                  "prev_hash", "record_hash"]

    def get_subject_hash(self, obj) -> str:
        return bytes(obj.subject_hash).hex()

    def get_record_hash(self, obj) -> str:
        return bytes(obj.record_hash).hex()

    def get_prev_hash(self, obj) -> str:
        return bytes(obj.prev_hash).hex()


class RequestInSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=DataSubjectRequest.Type.choices)
    identifier = IdentifierSerializer(required=False)
    profile_id = serializers.UUIDField(required=False)
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True)

    def validate(self, attrs):
        if bool(attrs.get("identifier")) == bool(attrs.get("profile_id")):
            raise serializers.ValidationError({"identifier": "give either identifier {kind, value} or profile_id"})
        return attrs


class RequestOutSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(read_only=True)
    handler = serializers.SlugRelatedField(slug_field="username", read_only=True)
    has_file = serializers.SerializerMethodField()

    class Meta:
        model = DataSubjectRequest
        fields = ["id", "reference", "type", "status", "subject_kind", "profile_id", "received_at", "due_at",
                  "handler", "completed_at", "outcome", "progress", "has_file", "result_expires_at"]

    def get_has_file(self, obj) -> bool:
        return bool(obj.result_file)
