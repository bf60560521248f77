"""Content: slots on client pages, the blocks that can fill them, and experiments on them."""

from django.conf import settings
from django.db import models


class Slot(models.Model):
    key = models.SlugField(max_length=80, unique=True, help_text="Place on a page, e.g. home_hero")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.key


class ContentBlock(models.Model):
    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    slot = models.ForeignKey(Slot, on_delete=models.PROTECT, related_name="blocks")
    template = models.TextField(help_text="HTML with {{ placeholders }}")
    tags = models.JSONField(default=list, blank=True)
    priority = models.IntegerField(default=0)
    is_active = models.BooleanField(default=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="owned_content_blocks")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slot", "-priority", "key"]

    def __str__(self):
        return self.key


class Variant(models.Model):
    block = models.ForeignKey(ContentBlock, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=40)
    template = models.TextField()
    weight = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["block", "key"], name="variant_block_key_uniq")]

    def __str__(self):
        return f"{self.block.key}/{self.key}"


class Experiment(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        RUNNING = "running"
        STOPPED = "stopped"

    key = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    block = models.ForeignKey(ContentBlock, on_delete=models.PROTECT, related_name="experiments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return self.key
