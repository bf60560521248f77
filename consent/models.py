"""Consent: the purposes personal data may be used for (ledger and requests follow)."""

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
