"""Profiles: the unified store of people, their identifiers, events and purchases.

Data flows in through `Source`s (ingestion API, imports), lands as `Event`s and
`Transaction`s, and is attached to one `Profile` per person through the identity graph
(`Identity` nodes joined by `IdentityLink` edges).
"""

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex
from django.db import models

from cdp.fields import EncryptedTextField


class Source(models.Model):
    """A named input of data: a website, an app, a server, a CRM or a point-of-sale system."""

    class Kind(models.TextChoices):
        WEBSITE = "website", "Website"
        APP = "app", "Mobile app"
        SERVER = "server", "Server"
        CRM = "crm", "CRM"
        POS = "pos", "Point of sale"
        OTHER = "other", "Other"

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.WEBSITE)
    allowed_origins = ArrayField(models.CharField(max_length=255), default=list, blank=True,
                                 help_text="Browser origins allowed to post events (CORS), e.g. https://shop.example")
    # Trait precedence when profiles merge: newest non-empty value wins, unless it comes from
    # an authoritative source (e.g. the CRM), which always wins.
    is_authoritative = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    # Ingestion quota; None = CDP_INGEST_EVENTS_PER_MINUTE. Above it the API answers 429.
    events_per_minute_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most messages accepted per minute (empty: the installation default)")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class SourceKey(models.Model):
    """An API key of a source. Only its SHA-256 is stored; the key is shown once at creation.

    Keys are 256-bit random tokens, so a fast unsalted hash is enough (as for GitHub tokens):
    there is nothing to brute-force, and lookups must be one indexed equality.
    """

    class Kind(models.TextChoices):
        WRITE = "write", "Write key (send events)"
        READ = "read", "Read key (segment lookups, decisions)"

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    prefix = models.CharField(max_length=12, help_text="First characters of the key, to tell keys apart")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    # Rotation sets expires_at on the old key (an overlap window); revocation is immediate.
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.source} {self.kind} key {self.prefix}…"


class Profile(models.Model):
    """One person. Typed columns hold what segments filter most; the rest is in `traits`.

    A profile absorbed by a merge keeps its row with `merged_into` pointing at the survivor,
    so old ids handed to client sites still resolve.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="absorbed")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    # Personal data: encrypted at rest.
    first_name = EncryptedTextField(null=True, blank=True)
    last_name = EncryptedTextField(null=True, blank=True)

    # Demographics (coarse, used by segments).
    birth_year = models.SmallIntegerField(null=True, blank=True)
    age = models.SmallIntegerField(null=True, blank=True)
    gender = models.CharField(max_length=20, blank=True, default="")
    country = models.CharField(max_length=2, blank=True, default="", help_text="ISO 3166-1 alpha-2")
    city = models.CharField(max_length=120, blank=True, default="")
    postcode = models.CharField(max_length=20, blank=True, default="")
    income_band = models.CharField(max_length=20, blank=True, default="")
    language = models.CharField(max_length=10, blank=True, default="")
    occupation = models.CharField(max_length=80, blank=True, default="")

    # Technographics, from the most recent event.
    last_device_type = models.CharField(max_length=20, blank=True, default="")
    last_os = models.CharField(max_length=40, blank=True, default="")
    last_browser = models.CharField(max_length=40, blank=True, default="")

    traits = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["last_seen_at"], name="profile_last_seen_idx"),
            models.Index(fields=["country", "city"], name="profile_country_city_idx"),
        ]

    def __str__(self):
        return str(self.id)


class ComputedTraits(models.Model):
    """Traits derived from behaviour, one row per profile, rebuilt incrementally and nightly.

    Kept apart from Profile so a full rebuild rewrites this narrow table, not every profile.
    RFM follows the buy-till-you-die conventions (see docs/rfm.md).
    """

    profile = models.OneToOneField(Profile, primary_key=True, on_delete=models.CASCADE, related_name="computed")
    updated_at = models.DateTimeField(auto_now=True)
    order_count = models.IntegerField(default=0)
    total_spent = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    average_order_value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    first_purchase_at = models.DateTimeField(null=True, blank=True)
    last_purchase_at = models.DateTimeField(null=True, blank=True)
    favourite_category = models.CharField(max_length=80, blank=True, default="")
    rfm_frequency = models.IntegerField(null=True, blank=True)
    rfm_recency = models.FloatField(null=True, blank=True, help_text="days")
    rfm_t = models.FloatField(null=True, blank=True, help_text="days")
    rfm_monetary_value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    r_score = models.SmallIntegerField(null=True, blank=True)
    f_score = models.SmallIntegerField(null=True, blank=True)
    m_score = models.SmallIntegerField(null=True, blank=True)
    rfm_segment = models.CharField(max_length=30, blank=True, default="")
    tenure_days = models.IntegerField(null=True, blank=True, help_text="days since the first purchase")
    rfm_as_of = models.DateField(null=True, blank=True, help_text="analysis date of the RFM figures")

    class Meta:
        verbose_name_plural = "computed traits"

    def __str__(self):
        return f"computed traits of {self.profile_id}"


class Identity(models.Model):
    """A node of the identity graph: one identifier of one kind, attached to one profile.

    Matching is on `value_hash` = HMAC(kind:normalized value), so personal identifiers can be
    encrypted in `value` without losing exact-match lookups.
    """

    class Kind(models.TextChoices):
        ANONYMOUS_ID = "anonymous_id", "Anonymous id"
        USER_ID = "user_id", "User id"
        EMAIL = "email", "Email"
        PHONE = "phone", "Phone"
        DEVICE_ID = "device_id", "Device id"
        CRM_ID = "crm_id", "CRM id"

    PERSONAL_KINDS = frozenset({Kind.EMAIL, Kind.PHONE})

    # No single-column index: identity_profile_kind_idx (profile, kind) serves lookups by profile
    # and the cascade, and an import writes one index less per identifier.
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="identities", db_index=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    value_hash = models.BinaryField(max_length=32)
    # Plaintext for pseudonymous ids (anonymous/user/device/crm); AES-GCM ciphertext for email
    # and phone (see `identity_value_store` in services).
    value = models.TextField()
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # The profile this identifier was first attached to. It never changes, so an un-merge can
    # hand each side back its original profile id (see profiles/identity/split.py). NULL means
    # "the current profile" (rows written before resolution set it, e.g. by bulk loads).
    origin_profile = models.ForeignKey(Profile, null=True, blank=True, on_delete=models.DO_NOTHING,
                                       db_constraint=False, related_name="+")

    class Meta:
        verbose_name_plural = "identities"
        constraints = [models.UniqueConstraint(fields=["kind", "value_hash"], name="identity_kind_value_uniq")]
        indexes = [models.Index(fields=["profile", "kind"], name="identity_profile_kind_idx")]

    def __str__(self):
        return f"{self.kind}:{self.id}"


class IdentityLink(models.Model):
    """An edge of the identity graph, with its provenance.

    A profile is a connected component of active links. Deactivating a link (un-merge) splits
    the component again; nothing about the link is ever deleted.
    """

    class Rule(models.TextChoices):
        SAME_MESSAGE = "same_message", "anonymousId and userId in one message"
        IDENTIFY_TRAITS = "identify_traits", "email / phone in identify traits"
        ALIAS = "alias", "alias previousId → userId"
        CRM_ROW = "crm_row", "identifiers on one CRM row"
        STAFF = "staff", "linked by staff"
        PROBABILISTIC = "probabilistic", "accepted probabilistic match"

    identity_a = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="+")
    identity_b = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="+")
    rule = models.CharField(max_length=20, choices=Rule.choices)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    is_active = models.BooleanField(default=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    deactivation_reason = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            # Store each undirected edge once: the smaller identity id first.
            models.CheckConstraint(condition=models.Q(identity_a__lt=models.F("identity_b")),
                                   name="identitylink_ordered"),
            models.UniqueConstraint(fields=["identity_a", "identity_b", "rule"], name="identitylink_uniq"),
        ]
        indexes = [models.Index(fields=["identity_b"], name="identitylink_b_idx")]

    def __str__(self):
        return f"{self.identity_a_id}–{self.identity_b_id} ({self.rule})"


class Event(models.Model):
    """One Segment-spec message (track, page, screen, identify, group, alias).

    The table is partitioned by month on `timestamp` (declarative partitioning, created in
    migration 0002 by hand: Django cannot express it). Its real primary key is (id, timestamp);
    Django is told `id` alone, which is unique because it comes from one sequence.
    `profile` and `source` carry no foreign-key constraint: a constraint on a 10M-row
    partitioned table would tax every COPY and every merge's re-pointing, and referential
    clean-up is done by the services that delete profiles.
    """

    class Type(models.TextChoices):
        TRACK = "track"
        PAGE = "page"
        SCREEN = "screen"
        IDENTIFY = "identify"
        GROUP = "group"
        ALIAS = "alias"

    id = models.BigAutoField(primary_key=True)
    timestamp = models.DateTimeField(help_text="Event time corrected for client clock skew")
    original_timestamp = models.TextField(null=True, blank=True, help_text="Client's timestamp, verbatim")
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                               related_name="+")
    profile = models.ForeignKey(Profile, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                                related_name="events")
    message_id = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=Type.choices)
    name = models.CharField(max_length=200, blank=True, default="",
                            help_text="track: event; page/screen: name")
    category = models.CharField(max_length=200, blank=True, default="")
    anonymous_id = models.CharField(max_length=200, blank=True, default="")
    user_id = models.CharField(max_length=200, blank=True, default="")
    group_id = models.CharField(max_length=200, blank=True, default="")
    previous_id = models.CharField(max_length=200, blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="integrations and any other keys, kept as sent")

    # Indexes and the partitioning live in migration 0002 (raw SQL on the partitioned parent).

    def __str__(self):
        return f"{self.type} {self.name} @ {self.timestamp:%Y-%m-%d %H:%M}"


class Product(models.Model):
    """A catalogue entry (demo data and transaction items refer to products by sku)."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    category = models.CharField(max_length=80)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default="EUR")

    class Meta:
        ordering = ["sku"]

    def __str__(self):
        return f"{self.sku} {self.name}"


class Transaction(models.Model):
    """A purchase, online or offline. `order_id` is unique per source, so re-sending or
    re-importing an order never counts it twice."""

    class Channel(models.TextChoices):
        WEB = "web"
        APP = "app"
        STORE = "store"
        PHONE = "phone"

    # No single-column indexes on source and profile: transaction_source_order_uniq (source, order_id)
    # and transaction_profile_ts_idx (profile, timestamp) lead with them and serve the same lookups
    # (the PROTECT check, SET NULL, "orders of a profile"); each index is written for every imported order.
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+", db_index=False)
    order_id = models.CharField(max_length=100)
    profile = models.ForeignKey(Profile, null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions",
                                db_index=False)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.WEB)
    store = models.CharField(max_length=80, blank=True, default="")
    timestamp = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "order_id"], name="transaction_source_order_uniq")]
        indexes = [
            models.Index(fields=["profile", "timestamp"], name="transaction_profile_ts_idx"),
            models.Index(fields=["timestamp"], name="transaction_ts_idx"),
        ]

    def __str__(self):
        return f"order {self.order_id}"


class TransactionItem(models.Model):
    transaction = models.ForeignKey(Transaction, on_delete=models.CASCADE, related_name="items")
    product_sku = models.CharField(max_length=64, blank=True, default="")
    product_name = models.CharField(max_length=200, blank=True, default="")
    category = models.CharField(max_length=80, blank=True, default="")
    price = models.DecimalField(max_digits=12, decimal_places=2)
    quantity = models.IntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["category"], name="transactionitem_category_idx")]

    def __str__(self):
        return f"{self.quantity}× {self.product_sku}"


class RejectedEvent(models.Model):
    """Input we could not accept, kept with the reason so nothing disappears silently.

    `payload` (the message, or the whole request body when the request itself failed) and
    `raw_body` (a body that was not valid JSON) are personal data and encrypted at rest.
    """

    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField()
    endpoint = models.CharField(max_length=20, default="batch",
                                help_text="route it came in on: batch, import, track, t, ...")
    reason = models.CharField(max_length=60, help_text="machine-readable code, e.g. missing_event")
    message = models.TextField(help_text="human-readable explanation")
    batch_index = models.IntegerField(null=True, blank=True, help_text="position in the batch; empty: the whole request")
    payload = EncryptedTextField(null=True, blank=True, help_text="JSON text of the message or request")
    raw_body = EncryptedTextField(blank=True, default="", help_text="when the body was not valid JSON")
    size_bytes = models.IntegerField(default=0, help_text="size of the rejected input (decompressed)")
    truncated = models.BooleanField(default=False, help_text="only the first part of an oversize input is kept")
    key_prefix = models.CharField(max_length=12, blank=True, default="",
                                  help_text="first characters of an unknown or revoked write key")
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    replay_note = models.TextField(blank=True, default="", help_text="outcome of the last replay attempt")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["reason", "received_at"], name="rejected_reason_idx"),
                   models.Index(fields=["source", "received_at"], name="rejected_source_idx")]

    def __str__(self):
        return f"{self.reason} @ {self.received_at:%Y-%m-%d %H:%M}"


class EventDedupe(models.Model):
    """Message ids already stored per source: the database constraint behind deduplication.

    The events table cannot carry unique (source, message_id): every unique index of a
    partitioned table must include its partition key (timestamp), and a retried message may
    carry a different skew-corrected timestamp. Rows are purged after CDP_INGEST_DEDUPE_DAYS
    (beat), so the window is at least that long.
    """

    # No foreign-key constraint and no separate index: the unique constraint leads with
    # source_id, and a constraint check per row would tax every ingested message.
    source = models.ForeignKey(Source, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                               related_name="+")
    message_id = models.CharField(max_length=100)
    first_received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "message_id"], name="eventdedupe_source_msg_uniq")]
        indexes = [BrinIndex(fields=["first_received_at"], name="eventdedupe_received_brin")]

    def __str__(self):
        return f"{self.source_id}:{self.message_id}"



class DroppedEventCount(models.Model):
    """Events received but not kept because consent did not allow it: only a count per source,
    hour and reason (issue 6: no analytics consent -> nothing of the event is stored).

    Ingestion upserts one row per (source, hour, reason) per request, as its last statement, so
    the row lock is held only for the commit. Nothing else is kept: no message id, no identifier.
    """

    class Reason(models.TextChoices):
        NO_CONSENT = "no_consent", "No analytics consent"
        SUPPRESSED = "suppressed", "Identifier of an erased person"
        MINIMISED_INVALID = "minimised_invalid", "Invalid once minimised"

    # The unique constraint leads with source_id (it serves the screens' per-source reads too).
    source = models.ForeignKey(Source, on_delete=models.CASCADE, db_index=False, related_name="+")
    hour = models.DateTimeField(help_text="start of the UTC hour the events were received in")
    reason = models.CharField(max_length=30, choices=Reason.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "hour", "reason"], name="dropped_source_hour_uniq")]

    def __str__(self):
        return f"{self.source_id} {self.hour:%Y-%m-%d %H}h {self.reason}: {self.count}"


# --- imports
# File imports (CRM, transactions, enrichment), their reusable column mappings, row-level error
# reports, and what an import hands on to identity resolution (pending merges). Consent columns go
# to the consent ledger (profiles/imports/consents.py).


class ImportMapping(models.Model):
    """A named, reusable column mapping: file header -> target field, plus cleaning options."""

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=20)
    columns = models.JSONField(default=dict, help_text='{"File header": "target field"}')
    options = models.JSONField(default=dict, blank=True, help_text="date format, label maps, decimal comma, ...")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ImportJob(models.Model):
    """One uploaded file and its import: mapping, progress, outcome and counts."""

    class Kind(models.TextChoices):
        CRM = "crm", "Profiles / CRM"
        TRANSACTIONS = "transactions", "Transactions"
        ENRICHMENT = "enrichment", "Attributes / enrichment"

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Waiting for mapping"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = frozenset({Status.QUEUED, Status.RUNNING})
    FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

    kind = models.CharField(max_length=20, choices=Kind.choices)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED)
    file_name = models.CharField(max_length=255)
    file_path = models.CharField(max_length=500, blank=True,
                                 help_text="where the upload is kept, under CDP_IMPORT_DIR; empty once removed")
    file_removed_reason = models.CharField(max_length=100, blank=True, default="",
                                           help_text="why the upload was deleted: expired, erasure")
    file_size = models.BigIntegerField(default=0)
    file_sha256 = models.CharField(max_length=64, blank=True, default="")
    file_format = models.CharField(max_length=10, blank=True, default="", help_text="csv, csv.gz or xlsx")
    encoding = models.CharField(max_length=20, blank=True, default="")
    delimiter = models.CharField(max_length=4, blank=True, default="")
    headers = models.JSONField(default=list, blank=True)
    mapping = models.ForeignKey(ImportMapping, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    columns = models.JSONField(default=dict, blank=True, help_text="the mapping used: header -> field")
    options = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    phase = models.CharField(max_length=40, blank=True, default="")
    rows_total = models.BigIntegerField(null=True, blank=True, help_text="estimated until the file is read")
    rows_done = models.BigIntegerField(default=0)
    rows_loaded = models.BigIntegerField(default=0)
    rows_rejected = models.BigIntegerField(default=0)
    rows_duplicate = models.BigIntegerField(default=0)
    profiles_matched = models.BigIntegerField(default=0)
    profiles_created = models.BigIntegerField(default=0)
    transactions_created = models.BigIntegerField(default=0)
    consents_recorded = models.BigIntegerField(default=0, help_text="consent records appended to the ledger")
    cancel_requested = models.BooleanField(default=False)
    # The database session doing the work: cancelling interrupts it (pg_cancel_backend), and a
    # session that vanished means the worker died (its transaction rolled back).
    backend_pid = models.IntegerField(null=True, blank=True)
    backend_started_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"], name="importjob_status_idx")]

    def __str__(self):
        return f"import {self.id} ({self.kind})"


class ImportRowError(models.Model):
    """One problem with one row of an imported file (the downloadable error report)."""

    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    row_number = models.BigIntegerField(help_text="line of the record in the file; the header is row 1")
    column = models.CharField(max_length=255, blank=True, default="")
    value = EncryptedTextField(blank=True, default="", help_text="the offending value, encrypted at rest")
    reason = models.CharField(max_length=300)

    class Meta:
        indexes = [models.Index(fields=["job", "row_number"], name="importrowerror_job_row_idx")]

    def __str__(self):
        return f"row {self.row_number}: {self.reason}"


class PendingMerge(models.Model):
    """Two existing profiles that one imported row says are the same person (merge requested)."""

    job = models.ForeignKey(ImportJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="merges")
    profile_a = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+")
    profile_b = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=60, default="crm_row")
    created_at = models.DateTimeField(auto_now_add=True)
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(profile_a__lt=models.F("profile_b")), name="pendingmerge_ordered"),
            models.UniqueConstraint(fields=["profile_a", "profile_b"], name="pendingmerge_pair_uniq"),
        ]

    def __str__(self):
        return f"merge {self.profile_a_id} + {self.profile_b_id}"


class EmailDigest(models.Model):
    """Keyed hash of sha256(email) for an email identity, so enrichment files keyed by hashed
    emails match without ever storing the unkeyed digest (which is guessable)."""

    identity = models.OneToOneField(Identity, primary_key=True, on_delete=models.CASCADE, related_name="+")
    digest_hash = models.BinaryField(max_length=32)

    class Meta:
        indexes = [models.Index(fields=["digest_hash"], name="emaildigest_hash_idx")]

    def __str__(self):
        return f"digest of identity {self.identity_id}"


class TraitProvenance(models.Model):
    """Which source last set each profile field: an authoritative source's value is kept
    against later non-authoritative imports ({"city": source_id, ...})."""

    profile = models.OneToOneField(Profile, primary_key=True, on_delete=models.CASCADE, related_name="+")
    fields = models.JSONField(default=dict)

    def __str__(self):
        return f"provenance of {self.profile_id}"


# --- identity resolution
# The graph itself is Identity (nodes) and IdentityLink (edges) above; these record what the
# resolver decided and why (profiles/identity/).


class ProfileMerge(models.Model):
    """One merge (two components joined by an edge) or split (an un-merge) of profiles.

    Merge: `other_profile` was absorbed into `profile` because of `link`. Split: deactivating
    `link` moved part of `profile`'s component to `other_profile` (new or revived).
    """

    class Kind(models.TextChoices):
        MERGE = "merge", "Merge"
        SPLIT = "split", "Un-merge"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="merge_log")
    other_profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="+")
    link = models.ForeignKey(IdentityLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rule = models.CharField(max_length=20, help_text="rule of the link, or 'rebuild'")
    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    reason = models.TextField(blank=True, default="")
    events_moved = models.IntegerField(default=0)
    transactions_moved = models.IntegerField(default=0)
    identities_moved = models.IntegerField(default=0)
    # Merges: the survivor's traits just before the merge (JSON, encrypted), so an un-merge can
    # give it back what it had on its own.
    state_before = EncryptedTextField(null=True, blank=True)
    undone_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "created_at"], name="profilemerge_profile_idx"),
            models.Index(fields=["other_profile"], name="profilemerge_other_idx"),
        ]

    def __str__(self):
        return f"{self.kind} {self.other_profile_id} -> {self.profile_id}"


class ProfileTraitSource(models.Model):
    """Where a profile's current value of one trait came from: the precedence rule (newest
    non-empty wins unless a source is authoritative) needs it when values compete."""

    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="trait_sources")
    name = models.CharField(max_length=120, help_text="typed column name, or traits.<key>")
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    is_authoritative = models.BooleanField(default=False)
    observed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["profile", "name"], name="traitsource_profile_name_uniq")]

    def __str__(self):
        return f"{self.profile_id} {self.name}"


class BlockedIdentifier(models.Model):
    """A value that must never identify anyone ("undefined", "0", test@test.com, ...).

    Matched against the normalised identifier (exact, case-insensitive) or as a regular
    expression; a blocked identifier is dropped from its message before linking.
    """

    class Match(models.TextChoices):
        EXACT = "exact", "Exact value"
        REGEX = "regex", "Regular expression"

    kind = models.CharField(max_length=20, blank=True, default="", choices=Identity.Kind.choices,
                            help_text="empty: every kind")
    match = models.CharField(max_length=10, choices=Match.choices, default=Match.EXACT)
    value = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=200, blank=True, default="")
    is_active = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False, help_text="shipped with the product")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    hits = models.BigIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["kind", "match", "value"]
        constraints = [models.UniqueConstraint(fields=["kind", "match", "value"], name="blockedidentifier_uniq")]

    def __str__(self):
        return f"{self.kind or 'any'} {self.match} {self.value!r}"


class IdentityFlag(models.Model):
    """A case the guard rails refused to merge automatically, for the data team to review."""

    class Kind(models.TextChoices):
        USER_ID_LIMIT = "user_id_limit", "Would join different user ids"
        SHARED_DEVICE = "shared_device", "Shared device (anonymous id seen with many user ids)"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        LINKED = "linked", "Linked by staff"
        DISMISSED = "dismissed", "Kept apart"

    key = models.CharField(max_length=60, unique=True, help_text="kind:link id or kind:identity id")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    identity = models.ForeignKey(Identity, on_delete=models.CASCADE, related_name="+")
    other_identity = models.ForeignKey(Identity, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    link = models.ForeignKey(IdentityLink, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    user_id_count = models.IntegerField(default=0)
    occurrences = models.IntegerField(default=1)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolution_note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [models.Index(fields=["status", "kind", "last_seen_at"], name="identityflag_status_idx")]

    def __str__(self):
        return self.key


class IdentityRebuild(models.Model):
    """One full recomputation of the identity graph's components (beat or `identity_rebuild`)."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    dry_run = models.BooleanField(default=False)
    identities = models.IntegerField(default=0)
    links = models.IntegerField(default=0)
    components = models.IntegerField(default=0)
    identities_moved = models.IntegerField(default=0)
    profiles_created = models.IntegerField(default=0)
    profiles_absorbed = models.IntegerField(default=0)
    events_moved = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"rebuild {self.started_at:%Y-%m-%d %H:%M} {self.status}"
