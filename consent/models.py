"""Consent: purposes, notices, the append-only consent ledger and the state derived from it,
data-subject requests, and the audit log of staff actions.

Subjects. Consent often arrives before any profile exists (a banner on an anonymous id), so a
ledger record names its subject as the identifier used: `subject_kind` (an Identity kind, or
`profile_id` when staff record consent for a profile) and `subject_hash` = the keyed hash
HMAC(kind:normalized value) that profiles.Identity matches on. The ledger never holds a profile
id or a plaintext identifier; the link from subjects to profiles lives in `SubjectLink` (mutable,
deleted on erasure), so erasure never has to touch the append-only ledger.

State. `SubjectConsent` (per subject and purpose) and `ProfileConsent` (per profile and purpose)
are kept in step with the ledger in the same transaction as every append (consent.services.state),
so reads never scan the ledger. No row means "not granted" (fail closed).
"""

import hashlib

from django.conf import settings
from django.db import models

from cdp.fields import EncryptedTextField


class AppendOnlyError(RuntimeError):
    """A change to an append-only table was attempted through the ORM."""


class AppendOnlyQuerySet(models.QuerySet):
    """The app-side half of the append-only rule (the database trigger is the other half)."""

    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} is append-only: write a new record instead")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} is append-only: rows are never deleted")

    _raw_delete = delete


SUBJECT_KINDS = [
    ("anonymous_id", "Anonymous id"),
    ("user_id", "User id"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("device_id", "Device id"),
    ("crm_id", "CRM id"),
    ("profile_id", "Profile id"),
]


class Purpose(models.Model):
    class LegalBasis(models.TextChoices):
        CONSENT = "consent", "Consent (GDPR art. 6(1)(a))"
        CONTRACT = "contract", "Contract (art. 6(1)(b))"
        LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (art. 6(1)(c))"
        LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest (art. 6(1)(f))"

    # The key is part of every client's payloads and must never change once used (the admin
    # makes it read-only); ledger records refer to purposes by id.
    key = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    legal_basis = models.CharField(max_length=30, choices=LegalBasis.choices, default=LegalBasis.CONSENT)
    is_active = models.BooleanField(default=True)
    withdrawn_by_gpc = models.BooleanField(
        default=False, help_text="A Global Privacy Control signal (Sec-GPC: 1) withdraws this purpose "
                                 "(sale / sharing of personal data, e.g. advertising).")

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.name


class NoticeVersion(models.Model):
    """An immutable snapshot of a privacy notice / banner text a person was shown.

    UPDATE and DELETE are refused by a database trigger (migration 0005); records point here.
    """

    key = models.SlugField(max_length=60, help_text="Which notice, e.g. web-banner, app-onboarding")
    version = models.CharField(max_length=40, help_text="e.g. 3 or 2026-11")
    language = models.CharField(max_length=10, help_text="BCP 47 language tag, e.g. en, de-DE")
    title = models.CharField(max_length=200, blank=True, default="")
    controllers = models.JSONField(default=list, blank=True, help_text="Controllers named in the notice")
    text = models.TextField()
    text_sha256 = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                                   db_constraint=False, related_name="+")

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["key", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["key", "version", "language"], name="notice_version_uniq")]

    def __str__(self):
        return f"{self.key} v{self.version} ({self.language})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("a notice version is immutable: create a new version")
        self.text_sha256 = self.digest(self.text)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("notice versions are never deleted")

    @staticmethod
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()


class ConsentRecord(models.Model):
    """One consent decision, appended to a hash chain; never updated, never deleted.

    `sequence` is the gapless position in the chain (assigned under an advisory lock);
    `record_hash` = SHA-256 of the canonical serialisation (consent.services.ledger.canonical),
    which includes `prev_hash`, the record_hash of the record before. A database trigger refuses
    UPDATE, DELETE and TRUNCATE.
    """

    class Source(models.TextChoices):
        WEB_BANNER = "web_banner", "Web banner / CMP"
        API = "api", "API"
        IMPORT = "import", "Import"
        STAFF = "staff", "Staff"
        SYSTEM = "system", "System (merge)"

    class Method(models.TextChoices):
        ACCEPT = "accept", "Accept"
        REJECT = "reject", "Reject"
        SAVE = "save", "Save choices"
        DISMISS = "dismiss", "Dismiss"
        GPC = "gpc", "Global Privacy Control"
        IMPORT = "import", "Import"
        MERGE = "merge", "Merge (most restrictive)"

    sequence = models.BigIntegerField(primary_key=True)
    prev_hash = models.BinaryField(max_length=32)
    record_hash = models.BinaryField(max_length=32, unique=True)
    subject_kind = models.CharField(max_length=20, choices=SUBJECT_KINDS)
    subject_hash = models.BinaryField(max_length=32)
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+")
    granted = models.BooleanField()
    source = models.CharField(max_length=20, choices=Source.choices)
    method = models.CharField(max_length=20, choices=Method.choices)
    notice = models.ForeignKey(NoticeVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    captured_at = models.DateTimeField(help_text="Server time (UTC) the record was written")
    client_timestamp = models.DateTimeField(null=True, blank=True, help_text="Time the client says it was given")
    decided_at = models.DateTimeField(help_text="Time the decision counts from (orders decisions)")
    page_url = models.TextField(blank=True, default="", help_text="Scheme, host and path only")
    user_agent = models.TextField(blank=True, default="")
    ip_hash = models.BinaryField(max_length=32, null=True, blank=True, help_text="keyed hash of the IP address")
    # Staff users and API keys may be removed later; the ledger keeps their ids (no constraint).
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+")
    actor_key = models.ForeignKey("profiles.SourceKey", null=True, blank=True, on_delete=models.DO_NOTHING,
                                  db_constraint=False, related_name="+")
    tc_string = models.TextField(blank=True, default="", help_text="IAB TCF v2 TC string, verbatim")
    tcf = models.JSONField(null=True, blank=True, help_text="Decoded TC string (purposes, vendors, metadata)")
    details = models.JSONField(default=dict, blank=True, help_text="e.g. CMP categories, merge conflict")

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["subject_hash", "subject_kind"], name="consent_record_subject_idx"),
            models.Index(fields=["purpose", "captured_at"], name="consent_record_purpose_idx"),
            models.Index(fields=["captured_at"], name="consent_record_captured_idx"),
        ]

    def __str__(self):
        return f"#{self.sequence} {'granted' if self.granted else 'withdrawn'}"

    def save(self, *args, **kwargs):
        raise AppendOnlyError("consent records are appended by consent.services.ledger.ledger_append only")

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("consent records are never deleted")


class SubjectConsent(models.Model):
    """Current decision per subject (identifier) and purpose: the newest record by decided_at."""

    subject_kind = models.CharField(max_length=20, choices=SUBJECT_KINDS)
    subject_hash = models.BinaryField(max_length=32)
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="+")
    granted = models.BooleanField()
    decided_at = models.DateTimeField()
    # No constraint: ledger rows are never deleted (trigger), and bulk appends skip the RI checks.
    record = models.ForeignKey(ConsentRecord, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subject_hash", "subject_kind", "purpose"],
                                               name="subject_consent_uniq")]

    def __str__(self):
        return f"{self.subject_kind} {self.purpose_id}: {self.granted}"


class SubjectLink(models.Model):
    """Which profile a subject's consent has been folded into (mutable; erasure deletes it)."""

    subject_kind = models.CharField(max_length=20, choices=SUBJECT_KINDS)
    subject_hash = models.BinaryField(max_length=32)
    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+")
    linked_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subject_hash", "subject_kind"], name="subject_link_uniq")]
        indexes = [models.Index(fields=["profile"], name="subject_link_profile_idx")]

    def __str__(self):
        return f"{self.subject_kind} -> {self.profile_id}"


class ProfileConsent(models.Model):
    """Current decision per profile and purpose. `conflict` marks a state set by a merge or a
    link of differing decisions (the most restrictive holds until the person decides again)."""

    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="+")
    granted = models.BooleanField()
    decided_at = models.DateTimeField()
    record = models.ForeignKey(ConsentRecord, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    conflict = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "purpose"], name="profile_consent_uniq")]
        # The enforcement checks read (purpose, granted, profile): one index-only probe per profile.
        indexes = [models.Index(fields=["purpose", "profile"], name="profile_consent_purpose_idx",
                                condition=models.Q(granted=True))]

    def __str__(self):
        return f"{self.profile_id} {self.purpose_id}: {self.granted}"


class CmpCategoryMapping(models.Model):
    """A consent category as a CMP names it, mapped to one of our purposes.

    `cmp` groups the mappings of one tool: `segment` (context.consent.categoryPreferences),
    `tcf` (IAB TCF purpose numbers), `import` (CSV column values), or any CMP name a client sends.
    """

    cmp = models.SlugField(max_length=40)
    category = models.CharField(max_length=120, help_text="Compared case-insensitively")
    purpose = models.ForeignKey(Purpose, on_delete=models.CASCADE, related_name="cmp_mappings")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["cmp", "category", "purpose__key"]
        constraints = [models.UniqueConstraint(fields=["cmp", "category", "purpose"], name="cmp_mapping_uniq")]

    def __str__(self):
        return f"{self.cmp}:{self.category} -> {self.purpose.key}"


class MinimisationRule(models.Model):
    """Field-level minimisation at ingestion: without `purpose`, drop the field or replace it by
    a keyed hash before the message is stored."""

    class Action(models.TextChoices):
        DROP = "drop", "Drop the field"
        HASH = "hash", "Replace by a keyed hash"

    event_type = models.CharField(max_length=10, default="*",
                                  help_text="track, page, screen, identify, group, alias, or * for all")
    event_name = models.CharField(max_length=200, blank=True, default="", help_text="Only this track event (optional)")
    field_path = models.CharField(max_length=200, help_text="Dotted path in the message, e.g. context.ip")
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.DROP)
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+",
                                help_text="The field is kept as sent only with this purpose granted")
    is_active = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["event_type", "event_name", "field_path"]

    def __str__(self):
        return f"{self.event_type}/{self.event_name or '*'} {self.field_path}: {self.action} without {self.purpose_id}"


class SuppressionEntry(models.Model):
    """Keyed hash of an identifier of an erased person: later events and imports must not
    recreate the person, until a new consent record for that identifier lifts the entry."""

    kind = models.CharField(max_length=20, choices=SUBJECT_KINDS)
    value_hash = models.BinaryField(max_length=32)
    reason = models.CharField(max_length=40, default="erasure")
    request = models.ForeignKey("DataSubjectRequest", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    created_at = models.DateTimeField()
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by_record = models.ForeignKey(ConsentRecord, null=True, blank=True, on_delete=models.DO_NOTHING,
                                         db_constraint=False, related_name="+")

    class Meta:
        verbose_name_plural = "suppression entries"
        constraints = [models.UniqueConstraint(fields=["value_hash", "kind"], name="suppression_uniq")]

    def __str__(self):
        return f"suppressed {self.kind} ({'lifted' if self.lifted_at else 'active'})"


class DataSubjectRequest(models.Model):
    """A request by a person about their data (GDPR art. 15-17): access, erasure, anonymisation,
    rectification. Due 30 days after receipt."""

    class Type(models.TextChoices):
        ACCESS = "access", "Access (copy of the data)"
        ERASURE = "erasure", "Erasure"
        ANONYMISATION = "anonymisation", "Anonymisation"
        RECTIFICATION = "rectification", "Rectification"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        REJECTED = "rejected", "Rejected"

    type = models.CharField(max_length=20, choices=Type.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    subject_kind = models.CharField(max_length=20, choices=SUBJECT_KINDS)
    subject_hash = models.BinaryField(max_length=32)
    # The identifier as given, encrypted; cleared when the person is erased or anonymised.
    subject_value = EncryptedTextField(null=True, blank=True)
    # No constraint: the profile may be erased while the request is kept.
    profile_id = models.UUIDField(null=True, blank=True)
    received_at = models.DateTimeField()
    due_at = models.DateTimeField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    handler = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    completed_at = models.DateTimeField(null=True, blank=True)
    note = EncryptedTextField(null=True, blank=True, help_text="Staff note (encrypted; cleared on erasure)")
    outcome = models.CharField(max_length=300, blank=True, default="", help_text="Result or rejection reason")
    progress = models.CharField(max_length=200, blank=True, default="")
    # Access exports: an AES-GCM encrypted zip in the default storage, removed after expiry.
    result_file = models.CharField(max_length=300, blank=True, default="")
    result_size = models.BigIntegerField(null=True, blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True, default="")
    result_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["status", "due_at"], name="dsr_status_due_idx"),
                   models.Index(fields=["subject_hash"], name="dsr_subject_idx")]

    def __str__(self):
        return f"{self.reference} {self.type}"

    @property
    def reference(self) -> str:
        return f"DSR-{self.pk:06d}" if self.pk else "DSR-new"

    @property
    def is_open(self) -> bool:
        return self.status in {self.Status.RECEIVED, self.Status.IN_PROGRESS}


class ErasureReceipt(models.Model):
    """What an erasure or anonymisation did: rows removed or changed per table, when, by whom.
    Holds no personal data (no identifiers, no profile id)."""

    class Kind(models.TextChoices):
        ERASURE = "erasure", "Erasure"
        ANONYMISATION = "anonymisation", "Anonymisation"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    request = models.ForeignKey(DataSubjectRequest, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="receipts")
    retention_rule = models.ForeignKey("RetentionRule", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    performed_at = models.DateTimeField()
    performed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    profiles = models.IntegerField(default=0, help_text="Profiles erased or anonymised")
    counts = models.JSONField(default=dict, help_text='{"app.Model": {"deleted": n, "changed": m}}')
    suppressed_identifiers = models.IntegerField(default=0)

    class Meta:
        ordering = ["-performed_at", "-id"]

    def __str__(self):
        return f"{self.kind} receipt {self.pk}"


class RetentionRule(models.Model):
    """How long one kind of data is kept; enforced daily by `retention_enforce_task` (which also
    deletes access exports older than CDP_DSR_FILE_DAYS, rule or not)."""

    class Target(models.TextChoices):
        EVENTS = "events", "Events (profiles.Event)"
        REJECTED_EVENTS = "rejected_events", "Rejected input (profiles.RejectedEvent)"
        TRANSACTIONS = "transactions", "Transactions (profiles.Transaction)"
        INACTIVE_PROFILES = "inactive_profiles", "Profiles not seen for the period"
        AUDIT_ENTRIES = "audit_entries", "Audit log entries"

    class Action(models.TextChoices):
        DELETE = "delete", "Delete"
        ANONYMISE = "anonymise", "Anonymise (profiles only)"

    target = models.CharField(max_length=30, choices=Target.choices)
    event_type = models.CharField(max_length=10, blank=True, default="", help_text="events only, e.g. page")
    event_name = models.CharField(max_length=200, blank=True, default="", help_text="events only, e.g. search")
    days = models.PositiveIntegerField()
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.DELETE)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["target", "event_type", "event_name"]

    def __str__(self):
        scope = "/".join(part for part in (self.event_type, self.event_name) if part)
        return f"{self.get_target_display()}{' ' + scope if scope else ''}: {self.days} days"


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
