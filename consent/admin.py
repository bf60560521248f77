from django.contrib import admin

from consent import reference
from consent.models import (
    AuditEntry,
    CmpCategoryMapping,
    ConsentRecord,
    DataSubjectRequest,
    ErasureReceipt,
    MinimisationRule,
    NoticeVersion,
    ProfileConsent,
    Purpose,
    RetentionRule,
    SubjectConsent,
    SubjectLink,
    SuppressionEntry,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence and derived state: visible to superusers, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CacheClearingAdmin(admin.ModelAdmin):
    """Configuration read on hot paths through consent.reference's cache."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        reference.cache_clear()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        reference.cache_clear()


@admin.register(Purpose)
class PurposeAdmin(CacheClearingAdmin):
    list_display = ("key", "name", "legal_basis", "is_active", "withdrawn_by_gpc")

    def get_readonly_fields(self, request, obj=None):
        return ("key",) if obj else ()  # records and clients refer to the key

    def has_delete_permission(self, request, obj=None):
        return False  # deactivate instead: records point at purposes


@admin.register(NoticeVersion)
class NoticeVersionAdmin(admin.ModelAdmin):
    """Add-only: a notice version is an immutable snapshot (a database trigger refuses changes)."""

    list_display = ("key", "version", "language", "created_at", "text_sha256")
    readonly_fields = ("text_sha256", "created_at")

    def get_readonly_fields(self, request, obj=None):
        if obj:
            return [f.name for f in NoticeVersion._meta.fields]
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        obj.text_sha256 = NoticeVersion.digest(obj.text)
        obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    list_display = ("sequence", "captured_at", "subject_kind", "purpose", "granted", "source", "method")
    list_filter = ("purpose", "granted", "source", "method")


@admin.register(SubjectConsent)
class SubjectConsentAdmin(ReadOnlyAdmin):
    list_display = ("id", "subject_kind", "purpose", "granted", "decided_at")


@admin.register(SubjectLink)
class SubjectLinkAdmin(ReadOnlyAdmin):
    list_display = ("id", "subject_kind", "profile", "linked_at")


@admin.register(ProfileConsent)
class ProfileConsentAdmin(ReadOnlyAdmin):
    list_display = ("profile", "purpose", "granted", "conflict", "decided_at")
    list_filter = ("purpose", "granted", "conflict")


@admin.register(CmpCategoryMapping)
class CmpCategoryMappingAdmin(CacheClearingAdmin):
    list_display = ("cmp", "category", "purpose")
    list_filter = ("cmp",)


@admin.register(MinimisationRule)
class MinimisationRuleAdmin(CacheClearingAdmin):
    list_display = ("event_type", "event_name", "field_path", "action", "purpose", "is_active")
    list_filter = ("event_type", "action", "is_active")


@admin.register(SuppressionEntry)
class SuppressionEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "reason", "created_at", "lifted_at")


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "status", "received_at", "due_at", "handler")
    list_filter = ("type", "status")
    exclude = ("subject_value", "note")


@admin.register(ErasureReceipt)
class ErasureReceiptAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "performed_at", "performed_by", "profiles")


@admin.register(RetentionRule)
class RetentionRuleAdmin(admin.ModelAdmin):
    list_display = ("target", "event_type", "event_name", "days", "action", "is_active", "last_run_at")
    readonly_fields = ("last_run_at", "last_result")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "action", "object_type", "object_id")
    list_filter = ("action", "object_type")
