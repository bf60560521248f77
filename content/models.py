"""Content: slots on client pages, the blocks that can fill them, and experiments on them."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Slot(models.Model):
    key = models.SlugField(max_length=80, unique=True, help_text="Place on a page, e.g. home_hero")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    default_template = models.TextField(
        blank=True, default="",
        help_text="Shown when no block applies, and always to visitors who have not granted personalization")

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
    # Shown to members of any of these segments; none = every visitor who granted personalization.
    segments = models.ManyToManyField("segments.Segment", blank=True, related_name="content_blocks")
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


class Exposure(models.Model):
    """A personalised decision served to a known person: what they saw, where and when (the
    measurement side of experiments; part of an access export, deleted by erasure). Decisions for
    visitors without a profile, or without personalization consent, record nothing."""

    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+", db_index=False)
    source = models.ForeignKey("profiles.Source", on_delete=models.SET_NULL, null=True, related_name="+")
    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="+")
    block = models.ForeignKey(ContentBlock, on_delete=models.SET_NULL, null=True, related_name="+")
    variant = models.ForeignKey(Variant, on_delete=models.SET_NULL, null=True, related_name="+")
    experiment = models.ForeignKey(Experiment, on_delete=models.SET_NULL, null=True, related_name="+")
    at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["profile", "at"], name="exposure_profile_at_idx"),
                   models.Index(fields=["experiment", "variant"], name="exposure_experiment_idx")]

    def __str__(self):
        return f"exposure {self.pk} in slot {self.slot_id}"
