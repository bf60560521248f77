"""Current consent per subject and profile: kept in step with the ledger, fail closed, links and
merges never widen consent."""

from datetime import UTC, datetime, timedelta

from django.db import connection

from consent.enforcement import profiles_allowed
from consent.models import ConsentRecord, ProfileConsent, SubjectConsent, SubjectLink
from consent.services import inputs
from consent.services.state import State, consent_profiles_merge, consent_profiles_sync, fold
from tests.consent_helpers import decide, decide_for_profile, make_person


def _state(profile, purpose="personalization"):
    row = ProfileConsent.objects.filter(profile=profile, purpose__key=purpose).first()
    return None if row is None else (row.granted, row.conflict)


def test_no_record_means_not_granted(db):
    ada = make_person(email="ada@example.com")
    assert profiles_allowed(profile_ids=[ada.id], purpose="personalization") == set()
    assert ProfileConsent.objects.count() == 0


def test_a_withdrawal_is_a_new_record_and_the_state_follows_it(db):
    ada = make_person(email="ada@example.com")
    decide("email", "ada@example.com", {"personalization": True})
    assert profiles_allowed(profile_ids=[ada.id], purpose="personalization") == {ada.id}
    decide("email", "ADA@example.com ", {"personalization": False})
    assert profiles_allowed(profile_ids=[ada.id], purpose="personalization") == set()
    records = list(ConsentRecord.objects.order_by("sequence").values_list("granted", flat=True))
    assert records == [True, False]
    current = SubjectConsent.objects.get()
    assert (current.granted, current.record_id) == (False, 2)


def test_state_tables_match_the_ledger_after_many_appends(db):
    people = [make_person(email=f"p{i}@example.com", anonymous_id=f"anon-{i}") for i in range(6)]
    for round_ in range(4):
        for index, _ in enumerate(people):
            kind, value = ("email", f"p{index}@example.com") if round_ % 2 else ("anonymous_id", f"anon-{index}")
            decide(kind, value, {"analytics": (index + round_) % 3 != 0, "advertising": round_ == 3})
    with connection.cursor() as cursor:
        # Recompute "newest record per subject and purpose" straight from the ledger.
        cursor.execute("SELECT DISTINCT ON (subject_hash, subject_kind, purpose_id) subject_kind, subject_hash, "
                       "purpose_id, granted, sequence FROM consent_consentrecord "
                       "ORDER BY subject_hash, subject_kind, purpose_id, decided_at DESC, sequence DESC")
        expected = {(k, bytes(h), p): (g, s) for k, h, p, g, s in cursor.fetchall()}
    actual = {(c.subject_kind, bytes(c.subject_hash), c.purpose_id): (c.granted, c.record_id)
              for c in SubjectConsent.objects.all()}
    assert actual == expected
    for index, person in enumerate(people):  # the last round decided on the anonymous id
        assert _state(person, "analytics") == ((index + 3) % 3 != 0, False)
        assert _state(person, "advertising") == (True, False)


def test_consent_given_before_any_profile_exists_is_linked_later(db):
    decide("anonymous_id", "anon-7", {"analytics": True, "personalization": True})
    assert SubjectLink.objects.count() == 0
    profile = make_person(anonymous_id="anon-7")  # identity resolution creates the person later
    assert consent_profiles_sync(profile_ids=[profile.id]) == []
    assert profiles_allowed(profile_ids=[profile.id], purpose="personalization") == {profile.id}
    assert SubjectLink.objects.filter(profile=profile).count() == 2  # the anonymous id and the profile id
    assert ConsentRecord.objects.count() == 2  # linking agreeing decisions adds nothing


def test_linking_differing_decisions_keeps_the_most_restrictive_and_records_the_conflict(db):
    ada = make_person(email="ada@example.com")
    decide("email", "ada@example.com", {"personalization": False})
    decide("anonymous_id", "anon-9", {"personalization": True})  # a banner on a new device, not linked yet
    from profiles.models import Identity
    from tests.consent_helpers import hash_of
    now = datetime.now(UTC)
    Identity.objects.create(profile=ada, kind="anonymous_id", value_hash=hash_of("anonymous_id", "anon-9"),
                            value="anon-9", first_seen_at=now, last_seen_at=now)
    conflicts = consent_profiles_sync(profile_ids=[ada.id])
    assert len(conflicts) == 1 and conflicts[0].conflicting_records == (1, 2)
    assert _state(ada) == (False, True)
    record = ConsentRecord.objects.get(sequence=conflicts[0].record_sequence)
    assert (record.granted, record.source, record.method, record.subject_kind) == (False, "system", "merge",
                                                                                   "profile_id")
    assert record.details["conflicting_records"] == [1, 2] and record.details["reason"] == "link"
    # The person decides again: that clears the conflict.
    decide("anonymous_id", "anon-9", {"personalization": True})
    assert _state(ada) == (True, False)


def test_a_new_decision_on_an_identifier_already_of_the_profile_is_simply_the_newest(db):
    ada = make_person(email="ada@example.com", anonymous_id="anon-1")
    decide("email", "ada@example.com", {"personalization": False})
    decide("anonymous_id", "anon-1", {"personalization": True})
    assert _state(ada) == (True, False)
    assert ConsentRecord.objects.filter(source="system").count() == 0


def test_merging_profiles_with_differing_consent_never_widens_it(db, users):
    survivor = make_person(email="a@example.com")
    absorbed = make_person(email="b@example.com")
    decide_for_profile(survivor, {"personalization": True, "analytics": True, "email_marketing": True})
    decide_for_profile(absorbed, {"personalization": False, "analytics": True})
    conflicts = consent_profiles_merge(survivor_id=survivor.id, absorbed_ids=[absorbed.id], actor=users["dan"])
    assert [(c.purpose_id, c.conflicting_records) for c in conflicts] == [
        (ProfileConsent.objects.get(profile=survivor, purpose__key="personalization").purpose_id, (2, 5))]
    assert _state(survivor, "personalization") == (False, True)
    assert _state(survivor, "analytics") == (True, False)  # both agreed
    assert _state(survivor, "email_marketing") == (True, False)  # the other never decided: no conflict
    assert ProfileConsent.objects.filter(profile=absorbed).count() == 0
    assert SubjectLink.objects.filter(profile=absorbed).count() == 0
    merge_record = ConsentRecord.objects.get(source="system")
    assert (merge_record.actor_id, merge_record.details["reason"]) == (users["dan"].id, "merge")
    assert profiles_allowed(profile_ids=[survivor.id, absorbed.id], purpose="personalization") == set()


def test_an_older_imported_decision_does_not_override_a_newer_one(db):
    ada = make_person(email="ada@example.com")
    decide("email", "ada@example.com", {"email_marketing": False})
    old = (datetime.now(UTC) - timedelta(days=400)).date().isoformat()
    result = inputs.consent_from_import_rows(rows=[inputs.ImportConsentRow(2, "email", "ada@example.com",
                                                                           "newsletter", "yes", old)])
    assert (result.recorded, result.errors) == (1, [])
    assert ConsentRecord.objects.count() == 2  # kept as evidence
    assert _state(ada, "email_marketing") == (False, False)  # the newer decision still holds


def test_fold_rules():
    now = datetime.now(UTC)
    granted, withdrawn = State(True, now, 1), State(False, now - timedelta(days=1), 2)
    assert fold(None, []) == (None, ())
    assert fold(None, [granted]) == (granted, ())
    assert fold(granted, [State(True, now + timedelta(seconds=1), 3)]) == (State(True, now + timedelta(seconds=1), 3),
                                                                           ())
    assert fold(granted, [withdrawn]) == (None, (1, 2))
    assert fold(withdrawn, [granted]) == (None, (1, 2))
