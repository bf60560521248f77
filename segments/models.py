"""Segments: named groups of profiles defined by a condition tree (see docs/architecture.md)."""

from django.conf import settings
from django.db import models


class Segment(models.Model):
    key = models.SlugField(max_length=80, unique=True, help_text="Stable key used by client sites, e.g. loyal_buyers")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    definition = models.JSONField(default=dict, blank=True, help_text="Condition tree")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="owned_segments")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.key
