"""Shared mechanisms the apps build on: API keys, the profiles-changed hook, the PII registry,
the audit log."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from cdp import apikeys, hooks
from cdp.pii import registry, undeclared_models
from consent.models import AuditEntry
from consent.services import audit_record
from profiles.models import Source, SourceKey


@pytest.fixture
def source(db):
    return Source.objects.create(name="Shop", kind=Source.Kind.WEBSITE)


def test_a_key_is_shown_once_and_stored_only_as_a_hash(source):
    key, raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    assert raw.startswith("wk_") and len(raw) > 40
    assert key.key_hash == apikeys.key_hash(raw) and raw not in key.key_hash
    assert key.prefix == raw[:10]
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE).source_id == source.id


def test_a_key_works_only_for_its_kind(source):
    _, raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.READ)
    assert raw.startswith("rk_")
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE) is None
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.READ) is not None


def test_unknown_empty_and_absurd_keys_resolve_to_nothing(source):
    assert apikeys.key_resolve("wk_nope", kind=SourceKey.Kind.WRITE) is None
    assert apikeys.key_resolve("", kind=SourceKey.Kind.WRITE) is None
    assert apikeys.key_resolve("x" * 5000, kind=SourceKey.Kind.WRITE) is None


def test_revocation_is_immediate(source):
    key, raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE)
    apikeys.source_key_revoke(key=key)
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE) is None


def test_rotation_keeps_the_old_key_for_the_overlap_window_only(source):
    old, old_raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    new, new_raw = apikeys.source_key_rotate(key=old, overlap=timedelta(hours=1))
    assert apikeys.key_resolve(old_raw, kind=SourceKey.Kind.WRITE)
    assert apikeys.key_resolve(new_raw, kind=SourceKey.Kind.WRITE).key_id == new.id
    SourceKey.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    apikeys._cache.clear()
    assert apikeys.key_resolve(old_raw, kind=SourceKey.Kind.WRITE) is None
    assert apikeys.key_resolve(new_raw, kind=SourceKey.Kind.WRITE)


def test_a_deactivated_source_authenticates_nothing(source):
    _, raw = apikeys.source_key_create(source=source, kind=SourceKey.Kind.WRITE)
    Source.objects.filter(pk=source.pk).update(is_active=False)
    apikeys._cache.clear()
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.WRITE) is None


def test_profiles_changed_ignores_an_empty_change(db):
    with transaction.atomic():
        assert hooks.profiles_changed(profile_ids=[]) is False


def test_every_model_is_declared_in_the_pii_registry(db):
    assert undeclared_models() == []
    for location in registry().locations:
        assert location.on_erasure in {"delete", "keep_hashed", "cascade"}


def test_audit_entries_carry_actor_action_and_no_payload(users):
    entry = audit_record(actor=users["dan"], action="profile.viewed", object_type="profile", object_id="p-1",
                         details={"tab": "timeline"})
    assert AuditEntry.objects.get() == entry
    assert (entry.actor, entry.action, entry.object_id) == (users["dan"], "profile.viewed", "p-1")


def test_a_wipe_also_empties_tables_that_point_at_profiles_without_a_foreign_key(db):
    from datetime import UTC, datetime

    from profiles.models import Profile
    from profiles.services import profiles_wipe
    from segments.models import MembershipChange, Segment, Timer

    now = datetime.now(UTC)
    profile = Profile.objects.create()
    segment = Segment.objects.create(key="s", name="S")
    MembershipChange.objects.create(segment=segment, profile=profile, kind="entered", at=now, definition_version=1,
                                    membership_version=1, cause="recompute")
    Timer.objects.create(segment=segment, profile=profile, due_at=now)
    profiles_wipe()
    assert (Profile.objects.count(), MembershipChange.objects.count(), Timer.objects.count()) == (0, 0, 0)
    assert Segment.objects.filter(pk=segment.pk).exists()
