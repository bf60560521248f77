"""Consent records for the demo profiles: most granted analytics, fewer personalization and
email marketing, few advertising, a few later withdrawals. Written through the ledger in large
batches (COPY, set-based state updates), so the demo chain verifies like a real one.

Deterministic: the same profiles and seed give the same decisions.
"""

import random
from datetime import timedelta

from django.db import connection, transaction

from consent import reference
from consent.models import ConsentRecord, NoticeVersion
from consent.services import ledger

BATCH = 20_000
# purpose -> share of people who grant it on the banner
GRANT_RATE = {"analytics": 0.86, "personalization": 0.58, "email_marketing": 0.42, "advertising": 0.31,
              "third_party_sharing": 0.09}
WITHDRAW_RATE = 0.04  # of those who granted personalization or email marketing, withdraw later
DEMO_NOTICE_TEXT = (
    "Demo Shop and its partners use cookies and similar technologies to measure how the shop is used "
    "(analytics), to tailor offers to you (personalization), to send you our newsletter (email marketing) "
    "and to show you relevant advertising. You can change your choices at any time under Privacy settings.")

# One subject per profile: the identifier the banner decision was made with. Index:
# identity_profile_kind_idx (profile_id, kind).
_SUBJECTS = """
SELECT DISTINCT ON (i.profile_id) i.profile_id, i.kind, i.value_hash, p.first_seen_at, p.last_seen_at
FROM profiles_identity i JOIN profiles_profile p ON p.id = i.profile_id
WHERE p.merged_into_id IS NULL AND p.first_seen_at IS NOT NULL
ORDER BY i.profile_id, (i.kind = 'anonymous_id') DESC, i.id
"""


def _notice() -> NoticeVersion:
    notice = NoticeVersion.objects.filter(key="web-banner", version="1", language="en").first()
    return notice or NoticeVersion.objects.create(key="web-banner", version="1", language="en",
                                                  title="Privacy choices", controllers=["Demo Shop GmbH"],
                                                  text=DEMO_NOTICE_TEXT)


def _decisions(rand: random.Random, subject, purpose_ids, notice_id) -> list[ledger.RecordInput]:
    profile_id, kind, digest, first_seen, last_seen = subject
    choices = {key: rand.random() < rate for key, rate in GRANT_RATE.items()}
    values = set(choices.values())
    method = (ConsentRecord.Method.ACCEPT if values == {True} else ConsentRecord.Method.REJECT if values == {False}
              else ConsentRecord.Method.SAVE)
    common = {"subject_kind": kind, "subject_hash": bytes(digest), "source": ConsentRecord.Source.WEB_BANNER,
              "notice_id": notice_id, "page_url": "https://demo-shop.example/", "user_agent": "demo"}
    records = [ledger.RecordInput(purpose_id=purpose_ids[key], granted=granted, method=method,
                                  client_timestamp=first_seen, decided_at=first_seen, **common)
               for key, granted in choices.items()]
    for key in ("personalization", "email_marketing"):
        if choices[key] and rand.random() < WITHDRAW_RATE and last_seen > first_seen:
            when = first_seen + (last_seen - first_seen) * rand.random() + timedelta(seconds=1)
            records.append(ledger.RecordInput(purpose_id=purpose_ids[key], granted=False,
                                              method=ConsentRecord.Method.SAVE, client_timestamp=when,
                                              decided_at=when, **common))
    return records


@transaction.atomic
def demo_consent_generate(*, seed: int = 42) -> int:
    """Append banner decisions for every demo profile that has none yet; returns records added."""
    notice = _notice()
    purpose_ids = {key: reference.purpose_id(key) for key in GRANT_RATE}
    with connection.cursor() as cursor:
        cursor.execute(_SUBJECTS)
        subjects = cursor.fetchall()
        cursor.execute("SELECT DISTINCT subject_hash FROM consent_consentrecord")
        decided = {bytes(row[0]) for row in cursor.fetchall()}
    records = []
    for subject in subjects:
        if bytes(subject[2]) in decided:
            continue
        records.extend(_decisions(random.Random(f"{seed}:{subject[0]}"), subject, purpose_ids, notice.pk))
    records.sort(key=lambda r: (r.decided_at, bytes(r.subject_hash), r.purpose_id))  # the chain follows time
    for start in range(0, len(records), BATCH):
        ledger.ledger_append(records[start:start + BATCH])
    return len(records)
