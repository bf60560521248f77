from django.contrib import admin

from content import models


@admin.register(models.Slot)
class SlotAdmin(admin.ModelAdmin):
    list_display = ("key", "name")


class VariantInline(admin.TabularInline):
    model = models.Variant
    extra = 0


@admin.register(models.ContentBlock)
class ContentBlockAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "slot", "priority", "is_active")
    filter_horizontal = ("segments",)
    list_filter = ("slot", "is_active")
    inlines = [VariantInline]


@admin.register(models.Variant)
class VariantAdmin(admin.ModelAdmin):
    list_display = ("block", "key", "weight")


@admin.register(models.Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "block", "status", "started_at", "ended_at")
    list_filter = ("status",)


@admin.register(models.Exposure)
class ExposureAdmin(admin.ModelAdmin):
    """Read-only: exposures are written by the decision API and removed by erasure."""

    list_display = ("at", "slot", "block", "variant", "experiment", "source")
    list_filter = ("slot", "experiment")
    raw_id_fields = ("profile",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
