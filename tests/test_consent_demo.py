"""Demo consent: realistic shares, through the real ledger, deterministic, linked to profiles."""

from datetime import UTC, datetime

from django.db import connection

from consent.demo import demo_consent_generate
from consent.enforcement import profiles_allowed
from consent.models import ConsentRecord, ProfileConsent
from consent.services import ledger
from profiles.demo.generator import DemoOptions, demo_generate
from profiles.models import Profile

END = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _fingerprint():
    with connection.cursor() as cursor:
        cursor.execute("SELECT encode(subject_hash, 'hex'), purpose_id, granted, decided_at FROM "
                       "consent_consentrecord ORDER BY sequence")
        return cursor.fetchall()


def test_demo_consent_has_realistic_shares_and_a_valid_chain(db, tmp_path):
    demo_generate(options=DemoOptions(profiles=400, days=30, seed=7, end=END))
    added = demo_consent_generate(seed=7)
    profiles = Profile.objects.count()
    assert profiles == 400
    assert added == ConsentRecord.objects.count() >= 5 * profiles
    share = {key: ProfileConsent.objects.filter(purpose__key=key, granted=True).count() / profiles
             for key in ("analytics", "personalization", "email_marketing", "advertising", "third_party_sharing")}
    assert 0.78 < share["analytics"] < 0.93
    assert 0.45 < share["personalization"] < 0.68
    assert 0.30 < share["email_marketing"] < 0.52
    assert share["advertising"] < share["email_marketing"] and share["third_party_sharing"] < 0.16
    withdrawals = ConsentRecord.objects.count() - 5 * profiles
    assert 1 <= withdrawals < 0.1 * profiles
    assert ProfileConsent.objects.values("profile").distinct().count() == profiles  # every one linked
    ids = list(Profile.objects.values_list("id", flat=True))
    assert len(profiles_allowed(profile_ids=ids, purpose="analytics")) == round(share["analytics"] * profiles)
    assert ledger.ledger_verify(head_dir=tmp_path).is_intact
    assert demo_consent_generate(seed=7) == 0  # people who decided already are left alone


def test_demo_consent_is_deterministic(db):
    demo_generate(options=DemoOptions(profiles=120, days=20, seed=3, end=END))
    demo_consent_generate(seed=3)
    first = _fingerprint()
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # the ledger refuses deletes otherwise
        cursor.execute("DELETE FROM consent_profileconsent; DELETE FROM consent_subjectconsent; "
                       "DELETE FROM consent_subjectlink; DELETE FROM consent_consentrecord")
    demo_consent_generate(seed=3)
    assert _fingerprint() == first
