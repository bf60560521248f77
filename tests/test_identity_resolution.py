"""Identity resolution: deterministic rules, guard rails, traits, idempotence (service level)."""

from datetime import timedelta

import pytest
from django.db import connection

from profiles.identifiers import identity_hash, readable_value
from profiles.identity.resolve import identity_resolve_batch
from profiles.identity.store import UNATTRIBUTED
from profiles.models import (
    BlockedIdentifier,
    Event,
    Identity,
    IdentityFlag,
    IdentityLink,
    Profile,
    ProfileMerge,
    Source,
    Transaction,
)
from tests.identity_helpers import (
    T0,
    event_insert,
    live_profiles,
    order_insert,
    profile_of_event,
    resolve_all,
)


@pytest.fixture
def web(db):
    return Source.objects.create(name="Web shop", kind=Source.Kind.WEBSITE)


@pytest.fixture
def crm(db):
    return Source.objects.create(name="CRM", kind=Source.Kind.CRM, is_authoritative=True)


def identity(kind: str, value: str) -> Identity:
    return Identity.objects.get(kind=kind, value_hash=identity_hash(kind, value))


def test_nothing_pending_is_a_cheap_no_op(web):
    result = identity_resolve_batch(limit=100)
    assert (result.events, result.profiles_created, result.merges) == (0, 0, 0)


def test_anonymous_and_user_id_in_one_message_make_one_profile(web):
    browsing = event_insert(source=web, name="Product Viewed", anonymous_id="anon-1")
    assert resolve_all() == 1
    login = event_insert(source=web, name="Signed In", anonymous_id="anon-1", user_id="user-1")
    assert resolve_all() == 1

    [profile] = live_profiles()
    assert profile_of_event(browsing) == profile_of_event(login) == profile.id
    anonymous, user = identity("anonymous_id", "anon-1"), identity("user_id", "user-1")
    assert (anonymous.profile_id, user.profile_id) == (profile.id, profile.id)
    assert (anonymous.value, user.value) == ("anon-1", "user-1")  # pseudonymous ids stay readable
    assert user.origin_profile_id == profile.id
    link = IdentityLink.objects.get()
    assert (link.identity_a_id, link.identity_b_id) == tuple(sorted((anonymous.id, user.id)))
    assert (link.rule, link.source_id, link.is_active) == ("same_message", web.id, True)
    assert link.first_seen_at == link.last_seen_at == Event.objects.get(id=login).timestamp
    assert ProfileMerge.objects.count() == 0


def test_logging_in_on_a_second_device_merges_its_profile_into_the_older_one(web):
    first = [event_insert(source=web, name="Page", anonymous_id="laptop") for _ in range(3)]
    resolve_all()
    second = [event_insert(source=web, name="Page", anonymous_id="phone") for _ in range(2)]
    resolve_all()
    laptop_profile, phone_profile = profile_of_event(first[0]), profile_of_event(second[0])
    assert laptop_profile != phone_profile
    event_insert(source=web, name="Signed In", anonymous_id="laptop", user_id="u-42")
    resolve_all()
    merging = event_insert(source=web, name="Signed In", anonymous_id="phone", user_id="u-42")
    result = resolve_all()

    assert result == 1
    assert [p.id for p in live_profiles()] == [laptop_profile]
    assert Profile.objects.get(id=phone_profile).merged_into_id == laptop_profile
    assert {profile_of_event(e) for e in [*first, *second, merging]} == {laptop_profile}
    merge = ProfileMerge.objects.get()
    link = IdentityLink.objects.get(identity_a__kind__in=["anonymous_id", "user_id"],
                                    id=merge.link_id)
    assert (merge.kind, merge.profile_id, merge.other_profile_id, merge.rule) == (
        "merge", laptop_profile, phone_profile, "same_message")
    assert {link.identity_a_id, link.identity_b_id} == {identity("anonymous_id", "phone").id,
                                                        identity("user_id", "u-42").id}
    assert (merge.events_moved, merge.identities_moved, merge.transactions_moved) == (2, 1, 0)
    assert identity("anonymous_id", "phone").origin_profile_id == phone_profile


def test_normalised_email_in_identify_traits_links_two_devices(web):
    a = event_insert(source=web, type="identify", anonymous_id="dev-a", traits={"email": "  Ann.Lee@Mail.DE "})
    resolve_all()
    b = event_insert(source=web, type="identify", anonymous_id="dev-b", traits={"email": "ann.lee@mail.de"})
    resolve_all()

    assert profile_of_event(a) == profile_of_event(b)
    email = identity("email", "ann.lee@mail.de")
    assert email.value.startswith("e1.") and "ann" not in email.value  # encrypted at rest
    assert readable_value(email) == "ann.lee@mail.de"
    rules = sorted(IdentityLink.objects.values_list("rule", flat=True))
    assert rules == ["identify_traits", "identify_traits"]


def test_phone_numbers_match_in_e164(web, settings):
    settings.CDP_DEFAULT_PHONE_REGION = "DE"
    a = event_insert(source=web, type="identify", anonymous_id="dev-a", traits={"phone": "030 1234567"})
    resolve_all()
    b = event_insert(source=web, type="identify", anonymous_id="dev-b", traits={"phone": "+49 (30) 123-4567"})
    resolve_all()

    assert profile_of_event(a) == profile_of_event(b)
    assert readable_value(identity("phone", "+49301234567")) == "+49301234567"


def test_alias_links_the_previous_anonymous_id_to_the_user_id(web):
    anonymous = event_insert(source=web, name="Page", anonymous_id="visitor-7")
    resolve_all()
    known = event_insert(source=web, name="Page", user_id="member-7")
    resolve_all()
    assert profile_of_event(anonymous) != profile_of_event(known)
    event_insert(source=web, type="alias", user_id="member-7", previous_id="visitor-7")
    resolve_all()

    assert profile_of_event(anonymous) == profile_of_event(known)
    assert ProfileMerge.objects.get().rule == "alias"
    assert identity("anonymous_id", "visitor-7").profile_id == profile_of_event(known)


def test_alias_between_two_user_ids_merges_despite_the_user_id_limit(web):
    old = event_insert(source=web, name="Page", user_id="old-login")
    new = event_insert(source=web, name="Page", user_id="new-login")
    resolve_all()
    event_insert(source=web, type="alias", user_id="new-login", previous_id="old-login")
    resolve_all()

    assert profile_of_event(old) == profile_of_event(new)
    link = IdentityLink.objects.get(rule="alias")
    assert {link.identity_a.kind, link.identity_b.kind} == {"user_id"}
    assert IdentityFlag.objects.count() == 0


def test_blocked_anonymous_id_does_not_merge_two_people(web):
    one = event_insert(source=web, name="Signed In", anonymous_id="undefined", user_id="alice")
    two = event_insert(source=web, name="Signed In", anonymous_id="undefined", user_id="bob")
    nobody = event_insert(source=web, name="Page", anonymous_id="  NULL ")
    resolve_all()

    assert profile_of_event(one) != profile_of_event(two)
    assert len(live_profiles()) == 2
    assert not Identity.objects.filter(kind="anonymous_id").exists()
    assert IdentityLink.objects.count() == 0
    assert profile_of_event(nobody) == UNATTRIBUTED  # kept, attributed to nobody, no longer pending
    assert Event.objects.filter(profile__isnull=True).count() == 0
    hits = dict(BlockedIdentifier.objects.filter(value__in=["undefined", "null"]).values_list("value", "hits"))
    assert hits == {"undefined": 2, "null": 1}


def test_blocked_email_and_staff_added_pattern_do_not_merge(web):
    BlockedIdentifier.objects.create(kind="user_id", match="regex", value=r"^qa-", note="QA logins")
    a = event_insert(source=web, type="identify", user_id="qa-1", anonymous_id="d1", traits={"email": "TEST@test.com"})
    b = event_insert(source=web, type="identify", user_id="qa-2", anonymous_id="d2", traits={"email": "test@test.com"})
    c = event_insert(source=web, type="identify", anonymous_id="d3", traits={"email": "NoEmail@NoEmail.com"})
    resolve_all()

    assert len({profile_of_event(a), profile_of_event(b), profile_of_event(c)}) == 3
    assert sorted(Identity.objects.values_list("kind", flat=True)) == ["anonymous_id"] * 3


def test_a_second_user_id_is_flagged_instead_of_merged(web):
    mine = event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="anna")
    resolve_all()
    theirs = event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="ben")
    later = event_insert(source=web, name="Page", anonymous_id="tablet")
    resolve_all()

    anna, ben = identity("user_id", "anna"), identity("user_id", "ben")
    assert anna.profile_id != ben.profile_id
    assert profile_of_event(mine) == anna.profile_id
    assert profile_of_event(theirs) == ben.profile_id  # the user id decides where an event goes
    assert profile_of_event(later) == anna.profile_id  # the tablet stays with its first user
    refused = IdentityLink.objects.get(is_active=False)
    assert refused.deactivation_reason == "refused: would put more than 1 user id(s) in one profile"
    flag = IdentityFlag.objects.get()
    assert (flag.kind, flag.status, flag.link_id, flag.occurrences) == ("user_id_limit", "open", refused.id, 1)
    assert {flag.identity_id, flag.other_identity_id} == {refused.identity_a_id, refused.identity_b_id}
    assert ProfileMerge.objects.count() == 0

    event_insert(source=web, name="Signed In", anonymous_id="tablet", user_id="ben")  # seen again
    resolve_all()
    flag.refresh_from_db()
    assert flag.occurrences == 2
    assert identity("user_id", "ben").profile_id != identity("user_id", "anna").profile_id


def test_a_shared_device_is_detached_and_flagged(web, settings):
    settings.CDP_IDENTITY_SHARED_DEVICE_USER_IDS = 3
    anonymous_only = event_insert(source=web, name="Page", anonymous_id="kiosk")
    resolve_all()
    logins = {}
    for user in ("u1", "u2", "u3"):
        logins[user] = event_insert(source=web, name="Signed In", anonymous_id="kiosk", user_id=user)
        resolve_all()
    kiosk = identity("anonymous_id", "kiosk")
    assert kiosk.profile_id == identity("user_id", "u1").profile_id  # two refusals, not yet shared
    assert IdentityFlag.objects.filter(kind="user_id_limit", status="open").count() == 2

    logins["u4"] = event_insert(source=web, name="Signed In", anonymous_id="kiosk", user_id="u4")
    resolve_all()

    kiosk.refresh_from_db()
    users = {u: identity("user_id", u).profile_id for u in ("u1", "u2", "u3", "u4")}
    assert len(set(users.values())) == 4 and kiosk.profile_id not in users.values()
    assert {u: profile_of_event(e) for u, e in logins.items()} == users
    assert profile_of_event(anonymous_only) == kiosk.profile_id  # the device keeps its anonymous browsing
    assert not IdentityLink.objects.filter(is_active=True).exists()
    shared = IdentityFlag.objects.get(kind="shared_device")
    assert (shared.identity_id, shared.user_id_count, shared.status) == (kiosk.id, 4, "open")
    assert set(IdentityFlag.objects.filter(kind="user_id_limit").values_list("status", flat=True)) == {"dismissed"}
    split = ProfileMerge.objects.get(kind="split")
    assert (split.profile_id, split.other_profile_id) == (users["u1"], kiosk.profile_id)

    again = event_insert(source=web, name="Signed In", anonymous_id="kiosk", user_id="u1")
    resolve_all()
    assert profile_of_event(again) == users["u1"]
    assert not IdentityLink.objects.filter(is_active=True).exists()


def test_transactions_attach_through_their_order_event(web):
    event_id, order = order_insert(source=web, order_id="W-1001", anonymous_id="buyer")
    other = Transaction.objects.create(source=web, order_id="W-unrelated", amount="1.00", currency="EUR",
                                       timestamp=T0)
    # Ingestion stores a numeric order id as text, whole floats without ".0" (1001.0 -> "1001").
    numeric_event = event_insert(source=web, name="order_completed", anonymous_id="buyer-2",
                                 properties={"order_id": 1001.0, "total": 5})
    numeric = Transaction.objects.create(source=web, order_id="1001", amount="5.00", currency="EUR", timestamp=T0)
    resolve_all()
    order.refresh_from_db()
    other.refresh_from_db()
    numeric.refresh_from_db()
    assert order.profile_id == profile_of_event(event_id)
    assert numeric.profile_id == profile_of_event(numeric_event)
    assert other.profile_id is None


def test_activity_and_device_come_from_the_newest_event(web):
    early = event_insert(source=web, name="Page", anonymous_id="d", timestamp=T0,
                         context={"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                                               "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 "
                                               "Safari/604.1"})
    resolve_all()
    event_insert(source=web, name="Page", anonymous_id="d", timestamp=T0 + timedelta(days=2),
                 context={"device": {"type": "Desktop"}, "os": {"name": "Windows"}, "browser": {"name": "Firefox"}})
    event_insert(source=web, name="Page", anonymous_id="d", timestamp=T0 + timedelta(days=1),
                 context={"device": {"type": "tablet"}, "os": {"name": "Android"}})
    resolve_all()
    profile = Profile.objects.get(id=profile_of_event(early))
    assert (profile.first_seen_at, profile.last_seen_at) == (T0, T0 + timedelta(days=2))
    assert (profile.last_device_type, profile.last_os, profile.last_browser) == ("desktop", "Windows", "Firefox")


def test_identify_traits_newest_non_empty_wins_unless_authoritative(web, crm):
    first = event_insert(source=web, type="identify", user_id="c-1", timestamp=T0 + timedelta(hours=1),
                         traits={"firstName": "Ann", "plan": "free", "age": "34", "email": "ann@mail.de",
                                 "address": {"city": "Köln", "country": "de", "street": "Ring 1"}})
    event_insert(source=crm, type="identify", user_id="c-1", timestamp=T0,
                 traits={"firstName": "Anne", "loyalty_tier": "gold"})
    resolve_all()
    event_insert(source=web, type="identify", user_id="c-1", timestamp=T0 + timedelta(hours=2),
                 traits={"firstName": "", "plan": "pro", "age": "not a number", "lastName": "Lee"})
    resolve_all()

    profile = Profile.objects.get(id=profile_of_event(first))
    assert (profile.first_name, profile.last_name, profile.age) == ("Anne", "Lee", 34)
    assert (profile.city, profile.country) == ("Köln", "DE")
    assert profile.traits == {"plan": "pro", "loyalty_tier": "gold"}  # no email, names or street in plaintext
    with connection.cursor() as cursor:
        cursor.execute("SELECT first_name FROM profiles_profile WHERE id = %s", [profile.id])
        assert cursor.fetchone()[0].startswith("e1.")
    sources = dict(profile.trait_sources.values_list("name", "source_id"))
    assert sources["first_name"] == crm.id and sources["traits.plan"] == web.id


def test_a_merge_combines_traits_by_the_same_precedence(web, crm):
    a = event_insert(source=crm, type="identify", anonymous_id="a", timestamp=T0,
                     traits={"age": 40, "plan": "basic"})
    b = event_insert(source=web, type="identify", anonymous_id="b", timestamp=T0 + timedelta(days=1),
                     traits={"age": 30, "plan": "pro", "firstName": "Bo"})
    resolve_all()
    event_insert(source=web, type="identify", anonymous_id="a", user_id="bo", timestamp=T0 + timedelta(days=2))
    event_insert(source=web, type="identify", anonymous_id="b", user_id="bo", timestamp=T0 + timedelta(days=2))
    resolve_all()

    [profile] = live_profiles()
    assert {profile_of_event(a), profile_of_event(b)} == {profile.id}
    assert (profile.age, profile.first_name, profile.traits["plan"]) == (40, "Bo", "basic")


def test_resending_the_same_messages_changes_nothing_but_last_seen(web):
    for minute in range(3):
        event_insert(source=web, type="identify", anonymous_id="a", user_id="u", timestamp=T0,
                     traits={"email": "same@mail.de"})
        event_insert(source=web, name="Page", anonymous_id="b", user_id="u", timestamp=T0 + timedelta(minutes=minute))
        resolve_all()
    snapshot = (list(Profile.objects.values_list("id", "merged_into_id")),
                sorted(Identity.objects.values_list("id", "profile_id")),
                sorted(IdentityLink.objects.values_list("id", "is_active")), ProfileMerge.objects.count())
    assert resolve_all() == 0
    event_insert(source=web, name="Page", anonymous_id="b", user_id="u", timestamp=T0 + timedelta(hours=1))
    resolve_all()
    assert (list(Profile.objects.values_list("id", "merged_into_id")),
            sorted(Identity.objects.values_list("id", "profile_id")),
            sorted(IdentityLink.objects.values_list("id", "is_active")), ProfileMerge.objects.count()) == snapshot
    assert len(live_profiles()) == 1
    link = IdentityLink.objects.get(identity_a__in=Identity.objects.filter(kind__in=["anonymous_id", "user_id"]),
                                    identity_b__in=Identity.objects.all(), rule="same_message",
                                    identity_a_id__in=[identity("anonymous_id", "b").id, identity("user_id", "u").id],
                                    identity_b_id__in=[identity("anonymous_id", "b").id, identity("user_id", "u").id])
    assert link.last_seen_at == T0 + timedelta(hours=1)


def test_demo_profiles_keep_their_ids_when_new_events_arrive(db):
    from profiles.demo.generator import DemoOptions, demo_generate

    demo_generate(options=DemoOptions(profiles=40, days=5, seed=4, end=T0))
    user = Identity.objects.filter(kind="user_id").first()
    device_link = IdentityLink.objects.filter(rule="same_message", identity_b=user).first() or \
        IdentityLink.objects.filter(rule="same_message", identity_a=user).first()
    anonymous = device_link.identity_a if device_link.identity_b_id == user.id else device_link.identity_b
    source = Source.objects.get(name="Demo web shop")
    event_id = event_insert(source=source, name="Page", anonymous_id=anonymous.value, user_id=user.value)
    profiles_before = Profile.objects.count()
    resolve_all()
    assert profile_of_event(event_id) == user.profile_id
    assert Profile.objects.count() == profiles_before
    assert ProfileMerge.objects.count() == 0


def test_a_session_that_used_temporary_tables_first_still_resolves(transactional_db):
    """A worker's connection may have run a real-time drain or an import (temporary tables)
    before a resolution batch: PostgreSQL then refuses a new temp_buffers, and the batch goes on
    with the session's buffers instead of failing."""
    from django.db import connection

    web = Source.objects.create(name="Web shop", kind=Source.Kind.WEBSITE)
    connection.close()  # a fresh session
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE earlier_task (i int)")
        cursor.execute("INSERT INTO earlier_task VALUES (1)")  # local buffers are allocated now
        cursor.execute("SHOW temp_buffers")
        before = cursor.fetchone()[0]
    assert before != "128MB"
    event = event_insert(source=web, name="Product Viewed", anonymous_id="anon-temp")
    assert resolve_all() == 1
    assert profile_of_event(event) == identity("anonymous_id", "anon-temp").profile_id
    with connection.cursor() as cursor:
        cursor.execute("SHOW temp_buffers")
        assert cursor.fetchone()[0] == before
