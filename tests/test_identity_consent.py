"""Consent in identity resolution: decisions recorded on identifiers before they joined a profile
apply to it, merges never widen consent (most restrictive + conflict in the ledger), and an
un-merge re-derives each side from its own decisions. Real resolver, real ledger."""

from datetime import timedelta

import pytest

from consent.enforcement import profiles_allowed
from consent.models import ConsentRecord, ProfileConsent, SubjectLink
from consent.services.state import PROFILE_SUBJECT, profile_subject_hash
from profiles.identifiers import identity_hash
from profiles.identity.flags import identity_flag_link
from profiles.identity.rebuild import identity_graph_rebuild
from profiles.identity.split import identity_link_deactivate
from profiles.models import Event, Identity, IdentityFlag, IdentityLink, Profile, Source
from tests.consent_helpers import decide, decide_for_profile
from tests.identity_helpers import T0, event_insert, live_profiles, profile_of_event, resolve_all


@pytest.fixture
def web(db):
    return Source.objects.create(name="Web shop", kind=Source.Kind.WEBSITE)


def states(profile_id) -> dict:
    """{purpose key: (granted, conflict)} of a profile's current consent."""
    return {row.purpose.key: (row.granted, row.conflict)
            for row in ProfileConsent.objects.filter(profile_id=profile_id).select_related("purpose")}


def sequences(kind: str, value: str, purpose: str) -> list[int]:
    return list(ConsentRecord.objects.filter(subject_kind=kind, subject_hash=identity_hash(kind, value),
                                             purpose__key=purpose).order_by("sequence")
                .values_list("sequence", flat=True))


def identity(kind: str, value: str) -> Identity:
    return Identity.objects.get(kind=kind, value_hash=identity_hash(kind, value))


def laptop_and_phone(web, laptop: dict, phone: dict):
    """Two devices with their own banner decisions; bob logs in on the phone. Returns the events."""
    decide("anonymous_id", "laptop", laptop)
    decide("anonymous_id", "phone", phone)
    on_laptop = event_insert(source=web, name="Page", anonymous_id="laptop", timestamp=T0)
    resolve_all()
    on_phone = event_insert(source=web, name="Signed In", anonymous_id="phone", user_id="bob",
                            timestamp=T0 + timedelta(hours=1))
    resolve_all()
    return on_laptop, on_phone


def test_a_merge_of_a_granted_and_a_withdrawn_profile_keeps_withdrawn_and_records_the_conflict(web):
    on_laptop, on_phone = laptop_and_phone(web, {"personalization": True, "analytics": True},
                                           {"personalization": False, "analytics": True})
    laptop, phone = profile_of_event(on_laptop), profile_of_event(on_phone)
    assert states(laptop) == {"personalization": (True, False), "analytics": (True, False)}
    assert states(phone) == {"personalization": (False, False), "analytics": (True, False)}
    assert ConsentRecord.objects.filter(source="system").count() == 0  # one identifier each: nothing to fold

    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    assert [p.id for p in live_profiles()] == [laptop]  # the older profile survives
    assert states(laptop) == {"personalization": (False, True), "analytics": (True, False)}
    assert ProfileConsent.objects.filter(profile_id=phone).count() == 0
    assert profiles_allowed(profile_ids=[laptop, phone], purpose="personalization") == set()
    assert profiles_allowed(profile_ids=[laptop, phone], purpose="analytics") == {laptop}

    record = ConsentRecord.objects.get(source="system")
    conflicting = sequences("anonymous_id", "laptop", "personalization") + sequences("anonymous_id", "phone",
                                                                                      "personalization")
    assert (record.granted, record.method, record.purpose.key, record.subject_kind, bytes(record.subject_hash),
            record.actor_id) == (False, "merge", "personalization", PROFILE_SUBJECT, profile_subject_hash(laptop),
                                 None)
    assert (record.details["reason"], record.details["conflicting_records"]) == ("merge", conflicting)
    assert ProfileConsent.objects.get(profile_id=laptop, purpose__key="personalization").record_id == record.sequence
    # The phone's identifiers now belong to the survivor: the person deciding again there clears it.
    assert SubjectLink.objects.get(subject_kind="anonymous_id",
                                   subject_hash=identity_hash("anonymous_id", "phone")).profile_id == laptop
    decide("anonymous_id", "phone", {"personalization": True})
    assert states(laptop)["personalization"] == (True, False)


SIDES = [None, True, False]  # never decided, granted, withdrawn


def test_merging_never_grants_what_either_side_withdrew_or_never_granted(web):
    cases = [(first, second) for first in SIDES for second in SIDES]
    for n, (first, second) in enumerate(cases):
        if first is not None:
            decide("anonymous_id", f"first-{n}", {"advertising": first})
        if second is not None:
            decide("anonymous_id", f"second-{n}", {"advertising": second})
        event_insert(source=web, name="Page", anonymous_id=f"first-{n}", timestamp=T0)
        event_insert(source=web, name="Page", anonymous_id=f"second-{n}", user_id=f"user-{n}",
                     timestamp=T0 + timedelta(minutes=1))
    resolve_all()
    for n in range(len(cases)):
        event_insert(source=web, name="Signed In", anonymous_id=f"first-{n}", user_id=f"user-{n}",
                     timestamp=T0 + timedelta(hours=1))
    resolve_all()

    survivors = {n: identity("user_id", f"user-{n}").profile_id for n in range(len(cases))}
    assert len(set(survivors.values())) == len(cases) == len(live_profiles())
    allowed = profiles_allowed(profile_ids=list(survivors.values()), purpose="advertising")
    found = {(first, second): states(survivors[n]).get("advertising") for n, (first, second) in enumerate(cases)}
    assert found == {
        (None, None): None,
        (None, True): (True, False), (True, None): (True, False), (True, True): (True, False),
        (None, False): (False, False), (False, None): (False, False), (False, False): (False, False),
        (True, False): (False, True), (False, True): (False, True),
    }
    assert allowed == {survivors[n] for n, case in enumerate(cases) if case in [(None, True), (True, None),
                                                                                (True, True)]}
    assert ConsentRecord.objects.filter(source="system", granted=True).count() == 0
    assert ConsentRecord.objects.filter(source="system").count() == 2


def test_a_decision_on_an_email_applies_once_the_email_joins_a_profile(web):
    decide("email", " Ada@Example.com", {"email_marketing": True})  # a CMP knew the email first
    decide("anonymous_id", "ada-phone", {"personalization": False})
    browsing = event_insert(source=web, name="Page", anonymous_id="ada-phone", timestamp=T0)
    resolve_all()
    ada = profile_of_event(browsing)
    assert states(ada) == {"personalization": (False, False)}
    assert not SubjectLink.objects.filter(subject_kind="email").exists()

    event_insert(source=web, type="identify", anonymous_id="ada-phone", user_id="ada",
                 traits={"email": "ada@example.com"}, timestamp=T0 + timedelta(minutes=5))
    resolve_all()
    assert states(ada) == {"personalization": (False, False), "email_marketing": (True, False)}
    assert SubjectLink.objects.get(subject_kind="email").profile_id == ada
    assert profiles_allowed(profile_ids=[ada], purpose="email_marketing") == {ada}
    # Linked now: a later withdrawal on the email is the person's newest decision, at once.
    decide("email", "ada@example.com", {"email_marketing": False})
    assert states(ada)["email_marketing"] == (False, False)


def test_an_identifier_joining_with_a_differing_decision_is_a_conflict_of_reason_link(web):
    decide("anonymous_id", "ada-phone", {"personalization": False})
    decide("email", "ada@example.com", {"personalization": True})
    event_insert(source=web, name="Page", anonymous_id="ada-phone", timestamp=T0)
    resolve_all()
    event_insert(source=web, type="identify", anonymous_id="ada-phone", traits={"email": "ada@example.com"},
                 timestamp=T0 + timedelta(minutes=5))
    resolve_all()
    ada = identity("anonymous_id", "ada-phone").profile_id
    assert states(ada) == {"personalization": (False, True)}
    record = ConsentRecord.objects.get(source="system")
    assert (record.details["reason"], record.details["conflicting_records"]) == (
        "link", sorted(sequences("anonymous_id", "ada-phone", "personalization")
                       + sequences("email", "ada@example.com", "personalization")))


def test_an_unmerge_re_derives_each_side_from_its_own_decisions(web, users):
    on_laptop, on_phone = laptop_and_phone(web, {"personalization": True}, {"personalization": False})
    laptop, phone = profile_of_event(on_laptop), profile_of_event(on_phone)
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    assert states(laptop) == {"personalization": (False, True)}
    records = ConsentRecord.objects.count()

    wrong = IdentityLink.objects.get(identity_a__in=[identity("anonymous_id", "laptop"), identity("user_id", "bob")],
                                     identity_b__in=[identity("anonymous_id", "laptop"), identity("user_id", "bob")])
    result = identity_link_deactivate(link_id=wrong.id, actor=users["dan"], reason="bob borrowed the laptop")
    assert result.profiles == [laptop, phone]  # the phone's profile is revived
    assert states(laptop) == {"personalization": (True, False)}  # the laptop's own decision, conflict gone
    assert states(phone) == {"personalization": (False, False)}
    assert ConsentRecord.objects.count() == records  # re-derived from existing records, nothing granted anew
    assert {(link.subject_kind, link.profile_id) for link in SubjectLink.objects.exclude(subject_kind=PROFILE_SUBJECT)
            } == {("anonymous_id", laptop), ("anonymous_id", phone)}
    assert SubjectLink.objects.get(subject_kind="anonymous_id",
                                   subject_hash=identity_hash("anonymous_id", "phone")).profile_id == phone


def test_an_unmerge_grants_nothing_to_a_side_that_never_decided(web, users):
    decide("anonymous_id", "laptop", {"personalization": True})
    on_laptop = event_insert(source=web, name="Page", anonymous_id="laptop", timestamp=T0)
    resolve_all()
    on_phone = event_insert(source=web, name="Page", anonymous_id="phone", user_id="bob",
                            timestamp=T0 + timedelta(hours=1))
    resolve_all()
    laptop, phone = profile_of_event(on_laptop), profile_of_event(on_phone)
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="bob", timestamp=T0 + timedelta(hours=2))
    resolve_all()
    assert states(laptop) == {"personalization": (True, False)}  # the phone never decided: no conflict
    decide_for_profile(Profile.objects.get(id=laptop), {"advertising": True})  # staff, about the merged person

    wrong = IdentityLink.objects.get(rule="same_message", identity_a__in=[identity("anonymous_id", "laptop"),
                                                                          identity("user_id", "bob")],
                                     identity_b__in=[identity("anonymous_id", "laptop"), identity("user_id", "bob")])
    identity_link_deactivate(link_id=wrong.id, actor=users["dan"], reason="two people")
    assert states(laptop) == {"personalization": (True, False), "advertising": (True, False)}
    assert states(phone) == {}
    assert profiles_allowed(profile_ids=[phone], purpose="personalization") == set()
    assert profiles_allowed(profile_ids=[phone], purpose="advertising") == set()
    assert Event.objects.filter(profile_id=phone).count() == 2  # both carry bob's user id


def test_a_staff_link_anyway_folds_consent_with_the_staff_member_as_actor(web, users):
    decide("user_id", "anna", {"email_marketing": True})
    decide("user_id", "anna.work", {"email_marketing": False})
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna")
    resolve_all()
    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna.work")
    resolve_all()
    anna, work = identity("user_id", "anna").profile_id, identity("user_id", "anna.work").profile_id
    assert (states(anna), states(work)) == ({"email_marketing": (True, False)}, {"email_marketing": (False, False)})

    identity_flag_link(flag_id=IdentityFlag.objects.get().id, actor=users["dan"], note="same person")
    assert states(anna) == {"email_marketing": (False, True)}
    record = ConsentRecord.objects.get(source="system")
    assert (record.actor_id, record.details["reason"], bytes(record.subject_hash)) == (
        users["dan"].id, "merge", profile_subject_hash(anna))


def test_a_merge_repaired_by_the_rebuild_folds_consent_too(web):
    decide("anonymous_id", "a", {"analytics": True, "advertising": True})
    decide("user_id", "b", {"analytics": True, "advertising": False})
    a = event_insert(source=web, name="Page", anonymous_id="a")
    b = event_insert(source=web, name="Page", user_id="b")
    resolve_all()
    profile_a, profile_b = profile_of_event(a), profile_of_event(b)
    low, high = sorted((identity("anonymous_id", "a").id, identity("user_id", "b").id))
    # A link written without merging (damage no service does): the nightly rebuild repairs it.
    IdentityLink.objects.create(identity_a_id=low, identity_b_id=high, rule="staff",
                                first_seen_at=T0, last_seen_at=T0)
    identity_graph_rebuild()
    assert Profile.objects.get(id=profile_b).merged_into_id == profile_a
    assert states(profile_a) == {"analytics": (True, False), "advertising": (False, True)}
    assert states(profile_b) == {}
    assert ConsentRecord.objects.get(source="system").details["reason"] == "merge"
