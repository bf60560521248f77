import hashlib
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from profiles.demo.generator import DemoOptions, demo_generate
from profiles.models import Event, Identity, IdentityLink, Profile, Transaction
from profiles.services import profiles_wipe

END = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _fingerprint() -> str:
    """A digest of the generated content (ids that come from sequences excluded)."""
    digest = hashlib.sha256()
    queries = [
        "SELECT id, age, gender, country, city, income_band, occupation, last_device_type, first_seen_at "
        "FROM profiles_profile ORDER BY id",
        "SELECT profile_id, kind, encode(value_hash, 'hex') FROM profiles_identity ORDER BY 1, 2, 3",
        "SELECT message_id, timestamp, type, name, anonymous_id, user_id, properties::text FROM profiles_event "
        "ORDER BY message_id",
        "SELECT order_id, profile_id, amount, channel, timestamp FROM profiles_transaction ORDER BY order_id",
    ]
    with connection.cursor() as cursor:
        for query in queries:
            cursor.execute(query)
            for row in cursor.fetchall():
                digest.update(repr(row).encode())
    return digest.hexdigest()


@pytest.fixture
def demo(db):
    return demo_generate(options=DemoOptions(profiles=300, days=30, seed=7, end=END))


def test_same_seed_and_end_give_identical_data(demo):
    first = _fingerprint()
    profiles_wipe()
    demo_generate(options=DemoOptions(profiles=300, days=30, seed=7, end=END))
    assert _fingerprint() == first
    profiles_wipe()
    demo_generate(options=DemoOptions(profiles=300, days=30, seed=8, end=END))
    assert _fingerprint() != first


def test_counts_returned_match_the_tables(demo):
    assert demo.counts["profiles"] == Profile.objects.count() == 300
    assert demo.counts["events"] == Event.objects.count()
    assert demo.counts["transactions"] == Transaction.objects.count()
    assert demo.counts["identities"] == Identity.objects.count()
    assert 15 <= demo.counts["events"] / 300 <= 26  # ~20 events per profile by default


def test_events_fall_inside_the_window(demo):
    timestamps = Event.objects.values_list("timestamp", flat=True)
    assert min(timestamps) >= datetime(2026, 10, 2, 12, tzinfo=UTC)
    assert max(timestamps) < END


def test_each_profile_is_one_connected_identity_graph(demo):
    identities = list(Identity.objects.values_list("id", "profile_id"))
    index = {identity_id: i for i, (identity_id, _) in enumerate(identities)}
    links = list(IdentityLink.objects.values_list("identity_a_id", "identity_b_id"))
    rows = [index[a] for a, _ in links]
    cols = [index[b] for _, b in links]
    graph = coo_matrix(([1] * len(links), (rows, cols)), shape=(len(identities), len(identities)))
    _, labels = connected_components(graph, directed=False)
    components_per_profile = defaultdict(set)
    for (_, profile_id), label in zip(identities, labels, strict=True):
        components_per_profile[profile_id].add(label)
    assert len(components_per_profile) == 300
    assert all(len(components) == 1 for components in components_per_profile.values())


def test_personal_identifiers_are_encrypted_and_hash_matched(demo):
    email = Identity.objects.filter(kind=Identity.Kind.EMAIL).first()
    assert email.value.startswith("e1.") and "@" not in email.value
    from profiles.identifiers import readable_value
    from profiles.selectors import profile_search

    assert list(profile_search(query=readable_value(email).upper())) == [email.profile]


def test_every_web_order_is_an_order_completed_event_with_the_same_total(demo):
    orders = {e.properties["order_id"]: e for e in Event.objects.filter(name="order_completed")}
    web_orders = Transaction.objects.filter(order_id__startswith="W-")
    assert web_orders.count() == len(orders) > 0
    for transaction in web_orders:
        event = orders[transaction.order_id]
        assert float(transaction.amount) == pytest.approx(event.properties["total"])
        assert event.profile_id == transaction.profile_id
        items_total = sum(float(i.price) * i.quantity for i in transaction.items.all())
        assert items_total == pytest.approx(float(transaction.amount))


def test_funnels_abandon_most_carts(demo):
    carts = Event.objects.filter(name="added_to_cart").values("profile_id").distinct().count()
    orders = Event.objects.filter(name="order_completed").count()
    checkouts = Event.objects.filter(name="checkout_started").count()
    assert checkouts > orders > 0
    assert orders < carts  # most carts never become orders


def test_command_refuses_to_mix_with_existing_data(demo):
    with pytest.raises(CommandError, match="already holds 300 profiles"):
        call_command("generate_demo", "--profiles", "10")
    call_command("generate_demo", "--profiles", "10", "--if-empty")
    assert Profile.objects.count() == 300


def test_first_and_last_seen_bound_each_profiles_events(demo):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM profiles_profile p JOIN (SELECT profile_id, min(timestamp) AS first, "
            "max(timestamp) AS last FROM profiles_event GROUP BY profile_id) e ON e.profile_id = p.id "
            "WHERE p.first_seen_at <> e.first OR p.last_seen_at <> e.last")
        assert cursor.fetchone()[0] == 0


def test_event_rows_written_as_copy_text_read_back_as_generated(demo):
    """Event rows bypass the COPY value formatter: timestamps, JSON and empty columns must still
    arrive as the typed values the generator meant."""
    events = list(Event.objects.order_by("message_id")[:400])
    assert events
    for event in events:
        assert event.original_timestamp == event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert (event.sent_at - event.timestamp).total_seconds() == 0.04
        assert (event.received_at - event.timestamp).total_seconds() == 0.18
        assert {"device", "os", "browser", "locale", "timezone", "location"} <= set(event.context)
        assert event.category == "" and event.extra == {}
        assert isinstance(event.properties, dict) and isinstance(event.traits, dict)
    order = Event.objects.filter(name="order_completed").first()
    assert order.properties["products"] and order.properties["order_id"].startswith("W-")
    landing = Event.objects.filter(type="page", context__page__path="/").first()
    assert landing.properties == {"path": "/", "title": "Home"}


@pytest.mark.django_db
def test_copy_json_survives_backslashes_quotes_and_control_characters():
    from profiles.demo.generator import _copy_json

    value = {"q": 'back\\slash "quoted"\ttab\nnewline', "ü": "naïve — ok", "n": [1, 2.5, None]}
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE copy_json_check (doc jsonb)")
        with cursor.cursor.copy("COPY copy_json_check (doc) FROM STDIN") as copy:
            copy.write(f"{_copy_json(value)}\n".encode())
        cursor.execute("SELECT doc::text FROM copy_json_check")
        import json

        assert json.loads(cursor.fetchone()[0]) == value


@pytest.mark.django_db
def test_a_load_failing_midway_leaves_nothing_and_says_why():
    """An identity the load would create already exists: the writer thread's COPY fails, the
    error reaches the caller and the whole load rolls back."""
    import threading

    from cdp import crypto

    holder = Profile.objects.create()
    Identity.objects.bulk_create([
        Identity(profile=holder, kind=Identity.Kind.USER_ID, value=crypto.encrypt(f"u{100000 + i}"),
                 value_hash=crypto.keyed_hash(Identity.Kind.USER_ID, f"u{100000 + i}"), first_seen_at=END,
                 last_seen_at=END) for i in range(150, 190)])  # people of the second chunk of three
    with pytest.raises(RuntimeError, match="demo data writer failed") as failure:
        demo_generate(options=DemoOptions(profiles=300, days=30, seed=7, end=END, chunk_size=100))
    assert "identity_kind_value_uniq" in str(failure.value.__cause__)
    assert list(Profile.objects.values_list("pk", flat=True)) == [holder.pk]
    assert Event.objects.count() == 0 and Transaction.objects.count() == 0
    assert Identity.objects.count() == 40
    assert not [t for t in threading.enumerate() if t.name == "demo-copy"]
