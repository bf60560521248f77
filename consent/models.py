"""Consent: the purposes personal data may be used for, and the audit log of staff actions."""

from django.conf import settings
from django.db import models


class Purpose(models.Model):
    class LegalBasis(models.TextChoices):
        CONSENT = "consent", "Consent (GDPR art. 6(1)(a))"
        CONTRACT = "contract", "Contract (art. 6(1)(b))"
        LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (art. 6(1)(c))"
        LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest (art. 6(1)(f))"

    key = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    legal_basis = models.CharField(max_length=30, choices=LegalBasis.choices, default=LegalBasis.CONSENT)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.name


class AuditEntry(models.Model):
    """One staff (or API key) action on personal data: viewed, exported, merged, erased, ...

    Append-only and free of personal data itself: `object_id` is a pseudonymous id (a profile
    UUID, a segment key), `details` holds counts and reasons, never values. Written through
    `consent.services.audit_record`.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_key = models.ForeignKey("profiles.SourceKey", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    action = models.CharField(max_length=60, help_text="e.g. profile.viewed, profile.merged, segment.exported")
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=100, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx"),
                   models.Index(fields=["action", "at"], name="audit_action_idx")]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.object_type}:{self.object_id}"
