from django.contrib import admin

from profiles import models


@admin.register(models.Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "is_active", "is_authoritative", "created_at")
    list_filter = ("kind", "is_active")
    search_fields = ("name",)


@admin.register(models.SourceKey)
class SourceKeyAdmin(admin.ModelAdmin):
    list_display = ("source", "kind", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("kind",)
    # The hash is useless to a human and keys are created through the source screens only.
    exclude = ("key_hash",)
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False


@admin.register(models.Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("id", "country", "city", "last_device_type", "last_seen_at", "merged_into")
    list_filter = ("country", "last_device_type", "gender")
    readonly_fields = ("id", "created_at", "updated_at")
    raw_id_fields = ("merged_into",)
    show_full_result_count = False


@admin.register(models.ComputedTraits)
class ComputedTraitsAdmin(admin.ModelAdmin):
    list_display = ("profile", "order_count", "total_spent", "rfm_segment", "updated_at")
    list_filter = ("rfm_segment",)
    raw_id_fields = ("profile",)
    show_full_result_count = False


@admin.register(models.Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "profile", "first_seen_at", "last_seen_at")
    list_filter = ("kind",)
    raw_id_fields = ("profile", "source")
    # value holds ciphertext for emails and phones; the profile screen shows readable values.
    exclude = ("value_hash",)
    show_full_result_count = False


@admin.register(models.IdentityLink)
class IdentityLinkAdmin(admin.ModelAdmin):
    list_display = ("id", "identity_a", "identity_b", "rule", "is_active", "last_seen_at")
    list_filter = ("rule", "is_active")
    raw_id_fields = ("identity_a", "identity_b", "source", "deactivated_by")
    show_full_result_count = False


@admin.register(models.Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "timestamp", "type", "name", "profile_id", "source_id")
    list_filter = ("type",)
    raw_id_fields = ("profile", "source")
    show_full_result_count = False


@admin.register(models.Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "category", "price", "currency")
    list_filter = ("category",)
    search_fields = ("sku", "name")


class TransactionItemInline(admin.TabularInline):
    model = models.TransactionItem
    extra = 0


@admin.register(models.Transaction)
class TransactionAdmin(admin.ModelAdmin):
    list_display = ("order_id", "source", "profile", "amount", "currency", "channel", "timestamp")
    list_filter = ("channel", "currency")
    search_fields = ("order_id",)
    raw_id_fields = ("profile",)
    inlines = [TransactionItemInline]
    show_full_result_count = False


@admin.register(models.TransactionItem)
class TransactionItemAdmin(admin.ModelAdmin):
    list_display = ("transaction", "product_sku", "category", "price", "quantity")
    raw_id_fields = ("transaction",)
    show_full_result_count = False


@admin.register(models.RejectedEvent)
class RejectedEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "reason", "source", "endpoint", "batch_index", "replayed_at")
    list_filter = ("reason", "endpoint")
    # Payloads are personal data: read them on the Rejected events screen, where reads are audited.
    exclude = ("payload", "raw_body")
    raw_id_fields = ("source", "replayed_by")
    show_full_result_count = False


@admin.register(models.EventDedupe)
class EventDedupeAdmin(admin.ModelAdmin):
    list_display = ("source_id", "message_id", "first_received_at")
    search_fields = ("=message_id",)
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(models.DroppedEventCount)
class DroppedEventCountAdmin(admin.ModelAdmin):
    """Counts of events not kept for lack of consent: read-only, written by ingestion only."""

    list_display = ("source", "hour", "reason", "count")
    list_filter = ("reason",)
    list_select_related = ("source",)
    date_hierarchy = "hour"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- imports


@admin.register(models.ImportMapping)
class ImportMappingAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "created_by", "updated_at")
    list_filter = ("kind",)
    search_fields = ("name",)


@admin.register(models.ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "source", "status", "file_name", "rows_loaded", "rows_rejected", "created_by",
                    "created_at")
    list_filter = ("kind", "status")
    readonly_fields = ("backend_pid", "backend_started_at", "heartbeat_at")
    raw_id_fields = ("mapping",)


@admin.register(models.ImportRowError)
class ImportRowErrorAdmin(admin.ModelAdmin):
    list_display = ("job", "row_number", "column", "reason")
    raw_id_fields = ("job",)
    exclude = ("value",)
    show_full_result_count = False


@admin.register(models.PendingMerge)
class PendingMergeAdmin(admin.ModelAdmin):
    list_display = ("profile_a", "profile_b", "reason", "job", "created_at", "handled_at")
    raw_id_fields = ("job", "profile_a", "profile_b")


@admin.register(models.EmailDigest)
class EmailDigestAdmin(admin.ModelAdmin):
    list_display = ("identity",)
    raw_id_fields = ("identity",)
    exclude = ("digest_hash",)
    show_full_result_count = False


@admin.register(models.TraitProvenance)
class TraitProvenanceAdmin(admin.ModelAdmin):
    list_display = ("profile",)
    raw_id_fields = ("profile",)
    show_full_result_count = False


# --- identity resolution


@admin.register(models.ProfileMerge)
class ProfileMergeAdmin(admin.ModelAdmin):
    list_display = ("created_at", "kind", "profile", "other_profile", "rule", "events_moved", "actor")
    list_filter = ("kind", "rule")
    raw_id_fields = ("profile", "other_profile", "link", "actor", "undone_by")
    exclude = ("state_before",)  # encrypted snapshot, meaningless to a human
    show_full_result_count = False

    def has_add_permission(self, request):
        return False  # merges are made by the resolver and the profile screen, never by hand


@admin.register(models.ProfileTraitSource)
class ProfileTraitSourceAdmin(admin.ModelAdmin):
    list_display = ("profile", "name", "source", "is_authoritative", "observed_at")
    raw_id_fields = ("profile", "source")
    show_full_result_count = False


@admin.register(models.BlockedIdentifier)
class BlockedIdentifierAdmin(admin.ModelAdmin):
    list_display = ("value", "kind", "match", "is_active", "is_default", "hits", "last_hit_at")
    list_filter = ("kind", "match", "is_active", "is_default")
    search_fields = ("value", "note")
    readonly_fields = ("hits", "last_hit_at", "created_at")


@admin.register(models.IdentityFlag)
class IdentityFlagAdmin(admin.ModelAdmin):
    list_display = ("key", "kind", "status", "occurrences", "last_seen_at")
    list_filter = ("kind", "status")
    raw_id_fields = ("identity", "other_identity", "link", "resolved_by")
    show_full_result_count = False


@admin.register(models.IdentityRebuild)
class IdentityRebuildAdmin(admin.ModelAdmin):
    list_display = ("started_at", "status", "dry_run", "components", "identities_moved", "profiles_absorbed",
                    "profiles_created", "seconds")
    list_filter = ("status",)
