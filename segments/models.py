"""Segments: named groups of profiles defined by a condition tree (see docs/architecture.md).

Membership is versioned. `Segment.membership_version` is the pointer readers follow; a
`Membership` row is visible at version v when `version_from <= v` and (`version_to` is null or
`version_to > v`). A full recompute stamps entering rows with v+1, closes leaving rows at v+1 and
moves the pointer with a conditional UPDATE in the same transaction, so readers see the complete
old or the complete new set; closed rows are deleted afterwards in batches. Real-time updates
write at the current version (visible at once). Every entry and exit is kept in
`MembershipChange` with the definition version that caused it.
"""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from cdp.fields import EncryptedTextField
from segments.querysets import SegmentQuerySet


class Segment(models.Model):
    class Kind(models.TextChoices):
        RULES = "rules", "Rules (condition tree)"
        STATIC = "static", "Static list (uploaded ids / emails)"

    class Status(models.TextChoices):
        NEW = "new", "Not computed yet"
        OK = "ok", "Up to date"
        FAILING = "failing", "Failing"

    key = models.SlugField(max_length=80, unique=True, help_text="Stable key used by client sites, e.g. loyal_buyers")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.RULES)
    definition = models.JSONField(default=dict, blank=True, help_text="Condition tree (see segments/evaluation)")
    definition_version = models.PositiveIntegerField(default=1)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="owned_segments")
    is_active = models.BooleanField(default=True)
    # Schedule of full recomputes: every N minutes (60 = hourly, 1440 = daily); null = manual.
    schedule_minutes = models.PositiveIntegerField(null=True, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    is_realtime = models.BooleanField(default=True, help_text="Re-evaluate profiles as their data changes")
    # Purposes (consent.Purpose keys) every member must have granted to appear in this segment's
    # exports, webhooks and lookups; checked at read time, so membership stays true to the rules.
    required_purposes = ArrayField(models.CharField(max_length=60), default=list, blank=True,
                                   help_text="Consent purposes exports, webhooks and lookups require")
    exposed_sources = models.ManyToManyField("profiles.Source", blank=True, related_name="exposed_segments",
                                             help_text="Sources whose read key may see this segment in lookups")
    # What the definition reads, so real-time evaluation only runs the segments a change can affect.
    event_names = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    trait_names = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    depends_on = ArrayField(models.BigIntegerField(), default=list, blank=True, help_text="Segment ids used")
    any_event = models.BooleanField(default=False, help_text="Any new event can change the answer")
    is_time_based = models.BooleanField(default=False, help_text="Time passing alone can change the answer")

    # Versioned membership and freshness.
    membership_version = models.BigIntegerField(default=0)
    member_count = models.IntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    computed_at = models.DateTimeField(null=True, blank=True, help_text="When the last successful recompute started")
    computed_definition_version = models.PositiveIntegerField(null=True, blank=True)
    compute_duration_ms = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    consecutive_failures = models.IntegerField(default=0)
    realtime_evaluated_at = models.DateTimeField(null=True, blank=True)
    realtime_lag_ms = models.IntegerField(null=True, blank=True,
                                          help_text="Last event received -> membership updated")

    # Webhooks on enter / exit.
    webhook_url = models.URLField(max_length=500, blank=True, default="")
    webhook_secret = EncryptedTextField(blank=True, default="")
    webhook_on_enter = models.BooleanField(default=True)
    webhook_on_exit = models.BooleanField(default=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SegmentQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        indexes = [
            models.Index(fields=["next_run_at"], name="segment_next_run_idx",
                         condition=models.Q(is_active=True, schedule_minutes__isnull=False)),
        ]

    def __str__(self):
        return self.key

    @property
    def schedule_label(self) -> str:
        minutes = self.schedule_minutes
        if not minutes:
            return "manual"
        if minutes == 1440:
            return "daily"
        if minutes == 60:
            return "hourly"
        if minutes % 60 == 0:
            return f"every {minutes // 60} hours"
        return f"every {minutes} minutes"


class SegmentRun(models.Model):
    """One full recompute (or static upload) of a segment: the run log behind freshness and retries."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        STALE = "stale", "Stale (a newer run or definition won)"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=20, default="manual", help_text="manual, schedule, definition, dependency")
    requested_at = models.DateTimeField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    definition_version = models.PositiveIntegerField(null=True, blank=True)
    membership_version = models.BigIntegerField(null=True, blank=True)
    size = models.IntegerField(null=True, blank=True)
    entered = models.IntegerField(null=True, blank=True)
    exited = models.IntegerField(null=True, blank=True)
    duration_ms = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["segment", "-requested_at"], name="segmentrun_segment_idx"),
                   models.Index(fields=["status", "requested_at"], name="segmentrun_status_idx")]

    def __str__(self):
        return f"run {self.id} of {self.segment_id} ({self.status})"


class Membership(models.Model):
    """A profile in a segment for a range of membership versions (see module docstring)."""

    # Both foreign keys are covered by the indexes below; no extra single-column indexes. Neither
    # is a database constraint: a per-row check on every entering row (a lookup and a row lock
    # on the referenced row, at commit) was measured to cost about as much as writing the rows,
    # and only the services write these rows. Wipes name this table (pii.WIPED_WITH_PROFILES);
    # erasure deletes by profile through the PII registry; ORM deletes still cascade.
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    version_from = models.BigIntegerField()
    version_to = models.BigIntegerField(null=True, blank=True)
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One open row per (segment, profile): the diff, real-time writes and reads use it.
            models.UniqueConstraint(fields=["segment", "profile"], condition=models.Q(version_to__isnull=True),
                                    name="membership_open_uniq"),
        ]
        indexes = [
            # Lookups go from a profile to its segments.
            models.Index(fields=["profile", "segment"], name="membership_profile_idx"),
            # Closed rows waiting for the batched clean-up.
            models.Index(fields=["segment"], name="membership_closed_idx",
                         condition=models.Q(version_to__isnull=False)),
        ]

    def __str__(self):
        return f"{self.profile_id} in {self.segment_id}"


class MembershipChange(models.Model):
    """History: one entry or exit, when, why, and under which definition version."""

    class Kind(models.TextChoices):
        ENTERED = "entered"
        EXITED = "exited"

    class Cause(models.TextChoices):
        RECOMPUTE = "recompute"
        REALTIME = "realtime"
        TIMER = "timer", "time passing"
        STATIC = "static", "static list upload"
        MERGE = "merge", "profile merged away"

    # No database constraints (like Event): a first recompute writes one history row per member,
    # and per-row foreign-key checks (each locks the referenced row) cost about as much as the
    # writes themselves. Deleting a profile or segment through the ORM still cascades here.
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    kind = models.CharField(max_length=7, choices=Kind.choices)
    at = models.DateTimeField()
    definition_version = models.PositiveIntegerField()
    membership_version = models.BigIntegerField()
    cause = models.CharField(max_length=10, choices=Cause.choices)

    class Meta:
        indexes = [models.Index(fields=["segment", "at"], name="membershipchange_seg_at_idx"),
                   models.Index(fields=["profile", "at"], name="membershipchange_prof_at_idx")]

    def __str__(self):
        return f"{self.profile_id} {self.kind} {self.segment_id} @ {self.at:%Y-%m-%d %H:%M}"


class Timer(models.Model):
    """The next moment at which a profile's answer for a segment can change by time alone
    (a window lapsing, "no checkout within 10 minutes" becoming true); the sweep re-evaluates
    due rows."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    # Derived data, rewritten by every evaluation: no database constraints (see MembershipChange);
    # a timer of a profile that no longer exists evaluates to nothing and is removed.
    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    due_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "profile"], name="timer_segment_profile_uniq")]
        indexes = [models.Index(fields=["due_at"], name="timer_due_idx")]

    def __str__(self):
        return f"{self.profile_id} / {self.segment_id} @ {self.due_at:%Y-%m-%d %H:%M:%S}"


class WebhookDelivery(models.Model):
    """One signed POST of entries or exits to a segment's webhook URL, with its retry state."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed", "Failed (gave up)"
        REFUSED = "refused", "Refused (address not allowed)"
        CANCELLED = "cancelled", "Cancelled (consent withdrawn)"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=7, help_text="entered or exited")
    payload = models.JSONField(help_text="segment key, event, profile ids and times; no personal fields")
    profile_count = models.IntegerField(default=0)
    withheld_count = models.IntegerField(default=0, help_text="Profiles taken out: a required purpose was withdrawn")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due_idx")]

    def __str__(self):
        return f"{self.event} webhook {self.id} of {self.segment_id} ({self.status})"


class RealtimeChange(models.Model):
    """A profile whose data changed, waiting for real-time evaluation (one row per profile and
    change). Changes queue here and one drainer at a time evaluates everything waiting, so a
    backlog turns into a few large batches instead of many small ones (segments.services.realtime)."""

    # No database constraint: rows live for seconds, and a profile deleted meanwhile evaluates
    # to nothing. The drainer deletes rows in id order (the primary key) inside its batch.
    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)
    event_names = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    trait_names = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    created_at = models.DateTimeField()

    def __str__(self):
        return f"{self.profile_id} changed @ {self.created_at:%H:%M:%S}"
