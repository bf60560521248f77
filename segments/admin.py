from django.contrib import admin

from segments.models import Segment


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "owner", "is_active", "updated_at")
    search_fields = ("key", "name")
