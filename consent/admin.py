from django.contrib import admin

from consent.models import Purpose


@admin.register(Purpose)
class PurposeAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "legal_basis", "is_active")
