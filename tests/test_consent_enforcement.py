"""The enforcement API phase 2 wires into ingestion, segments, lookups and exports: every check
fails closed and works on sets."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from psycopg import sql

from consent import reference
from consent.enforcement import (
    consent_condition,
    field_hash,
    identifier_sets_allowed,
    message_minimise,
    profile_purposes,
    profiles_allowed,
    suppressed_identifiers,
)
from consent.models import MinimisationRule, Purpose
from consent.services import person
from tests.consent_helpers import decide, decide_for_profile, hash_of, make_person


@pytest.fixture
def crowd(db):
    """Ten people: even ones granted personalization, 0 and 4 also advertising, 8 withdrew."""
    people = [make_person(email=f"p{i}@example.com") for i in range(10)]
    for index, profile in enumerate(people):
        if index % 2 == 0:
            decide_for_profile(profile, {"personalization": True, "advertising": index in (0, 4)})
    decide_for_profile(people[8], {"personalization": False})
    return people


def test_profiles_allowed_answers_for_a_set_in_one_query(crowd, django_assert_num_queries):
    reference.purposes()  # warm the in-process purpose cache, as in a running process
    with django_assert_num_queries(1):
        allowed = profiles_allowed(profile_ids=[p.id for p in crowd], purpose="personalization")
    assert allowed == {crowd[i].id for i in (0, 2, 4, 6)}
    assert profiles_allowed(profile_ids=[p.id for p in crowd], purpose="advertising") == {crowd[0].id, crowd[4].id}
    assert profiles_allowed(profile_ids=[], purpose="personalization") == set()


def test_unknown_and_inactive_purposes_allow_nobody(crowd):
    assert profiles_allowed(profile_ids=[p.id for p in crowd], purpose="no_such_purpose") == set()
    Purpose.objects.filter(key="personalization").update(is_active=False)
    reference.cache_clear()
    assert profiles_allowed(profile_ids=[p.id for p in crowd], purpose="personalization") == set()


def _select(condition) -> set:
    query = sql.SQL("SELECT p.id FROM profiles_profile p WHERE p.country = %s AND {}").format(condition.sql)
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(cursor.connection), ["", *condition.params])
        return {row[0] for row in cursor.fetchall()}


def test_the_sql_condition_composes_into_a_segment_query(crowd):
    column = sql.Identifier("p", "id")
    assert _select(consent_condition(profile_column=column, purposes=["personalization"])) == {
        crowd[i].id for i in (0, 2, 4, 6)}
    assert _select(consent_condition(profile_column=column, purposes=["personalization", "advertising"])) == {
        crowd[0].id, crowd[4].id}
    assert _select(consent_condition(profile_column=column, purposes=["personalization", "nope"])) == set()
    assert _select(consent_condition(profile_column=column, purposes=[])) == {p.id for p in crowd}
    text = consent_condition(profile_column=column, purposes=["personalization"]).sql.as_string(connection.connection)
    assert "%s" in text and str(reference.purpose_id("personalization")) not in text  # the value is a parameter


def test_a_withdrawal_is_effective_on_the_very_next_query(crowd):
    column = sql.Identifier("p", "id")
    decide_for_profile(crowd[2], {"personalization": False})
    assert crowd[2].id not in _select(consent_condition(profile_column=column, purposes=["personalization"]))
    assert profile_purposes(profile_id=crowd[2].id)["personalization"] is False
    assert profile_purposes(profile_id=crowd[0].id) == {"advertising": True, "analytics": False,
                                                        "email_marketing": False, "personalization": True,
                                                        "third_party_sharing": False}


def test_identifier_sets_of_messages(db):
    make_person(email="ada@example.com", anonymous_id="anon-ada")
    decide("email", "ada@example.com", {"analytics": True})
    decide("anonymous_id", "anon-new", {"analytics": True})  # no profile yet
    decide("anonymous_id", "anon-no", {"analytics": False})
    sets = [
        [("anonymous_id", hash_of("anonymous_id", "anon-ada"))],  # via the profile it belongs to
        [("anonymous_id", hash_of("anonymous_id", "anon-new"))],  # via the identifier itself
        [("anonymous_id", hash_of("anonymous_id", "anon-new")), ("anonymous_id", hash_of("anonymous_id", "anon-no"))],
        [("anonymous_id", hash_of("anonymous_id", "never-seen"))],  # nothing known: fail closed
        [],
    ]
    assert identifier_sets_allowed(identifier_sets=sets, purpose="analytics") == [True, True, False, False, False]
    assert identifier_sets_allowed(identifier_sets=sets, purpose="personalization") == [False] * 5


@pytest.fixture
def rules(db):
    purposes = {p.key: p for p in Purpose.objects.all()}
    MinimisationRule.objects.create(event_type="*", field_path="context.ip", action="drop",
                                    purpose=purposes["analytics"])
    MinimisationRule.objects.create(event_type="identify", field_path="traits.email", action="hash",
                                    purpose=purposes["email_marketing"])
    MinimisationRule.objects.create(event_type="track", event_name="order_completed", field_path="properties.address",
                                    action="drop", purpose=purposes["personalization"])
    reference.cache_clear()


MESSAGE = {"type": "track", "event": "order_completed", "userId": "u1",
           "properties": {"total": 10, "address": {"street": "Main St 1"}},
           "context": {"ip": "203.0.113.7", "locale": "en-GB"}}


def test_minimisation_drops_fields_without_their_purpose(rules):
    result = message_minimise(MESSAGE, granted_purposes=set())
    assert result == {"type": "track", "event": "order_completed", "userId": "u1", "properties": {"total": 10},
                      "context": {"locale": "en-GB"}}
    assert MESSAGE["context"]["ip"] == "203.0.113.7"  # the input is never modified
    assert message_minimise(MESSAGE, granted_purposes={"analytics", "personalization"}) is MESSAGE


def test_minimisation_replaces_a_field_by_its_keyed_hash(rules):
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com", "plan": "pro"},
                "context": {"ip": "203.0.113.7"}}
    result = message_minimise(identify, granted_purposes={"analytics"})
    assert result["traits"] == {"email": field_hash(["traits", "email"], "ada@example.com"), "plan": "pro"}
    assert result["traits"]["email"].startswith("h:") and "ada" not in result["traits"]["email"]
    assert result["context"] == {"ip": "203.0.113.7"}
    page = {"type": "page", "name": "Home", "properties": {"address": "kept: rule is for order_completed only"}}
    assert message_minimise(page, granted_purposes=set()) == page


def test_minimisation_ignores_paths_that_are_absent_or_not_objects(rules):
    message = {"type": "track", "event": "order_completed", "context": "not an object", "properties": None}
    assert message_minimise(message, granted_purposes=set()) is message


def test_erased_people_are_suppressed_until_new_consent_arrives(db):
    ada = make_person(email="ada@example.com", phone="+49 151 1234 5678", user_id="u-ada")
    decide("email", "ada@example.com", {"analytics": True})
    person.person_erase(person=person.person_find(kind="email", value="ada@example.com"))
    email = ("email", hash_of("email", "ada@example.com"))
    phone = ("phone", hash_of("phone", "+4915112345678"))
    other = ("email", hash_of("email", "bob@example.com"))
    assert suppressed_identifiers(identifiers=[email, phone, other]) == {email, phone}
    decide("email", "ada@example.com", {"analytics": True}, client_timestamp=datetime.now(UTC))
    assert suppressed_identifiers(identifiers=[email, phone, other]) == {phone}
    assert not ada.__class__.objects.filter(id=ada.id).exists()


def test_suppression_checked_in_the_database_for_a_staged_table(db):
    """The import's form of the check: identifiers in a temp table, only suppressed ones return;
    kinds not asked for are left out."""
    from django.db import connection

    from consent.enforcement import suppressed_identifiers_staged

    make_person(email="ada@example.com", phone="+49 151 1234 5678", user_id="u-ada")
    person.person_erase(person=person.person_find(kind="email", value="ada@example.com"))
    email = ("email", hash_of("email", "ada@example.com"))
    phone = ("phone", hash_of("phone", "+4915112345678"))
    other = ("email", hash_of("email", "bob@example.com"))
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE staged_ident (kind text, hash bytea)")
        cursor.execute("INSERT INTO staged_ident SELECT * FROM unnest(%s::text[], %s::bytea[])",
                       [[k for k, _ in (email, phone, other, email)], [h for _, h in (email, phone, other, email)]])
        assert suppressed_identifiers_staged(cursor, table="staged_ident", kinds=["email", "phone"]) == {email, phone}
        assert suppressed_identifiers_staged(cursor, table="staged_ident", kinds=["email"]) == {email}
        assert suppressed_identifiers_staged(cursor, table="staged_ident", kinds=[]) == set()
