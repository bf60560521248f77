"""Computed traits and RFM (buy-till-you-die conventions, docs/rfm.md) on imported histories."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from profiles.identifiers import identity_hash
from profiles.models import ComputedTraits, Identity, Source
from profiles.traits.services import computed_traits_rebuild, computed_traits_refresh
from tests.imports_helpers import _import_dir, run_import  # noqa: F401 - autouse fixture

AS_OF = date(2024, 6, 30)

# A shop's export: one line per order line, several orders on one day, a late-evening order,
# an order after the analysis date, a one-time buyer.
HISTORY = b"""order_id,customer_id,ordered_at,amount,currency,product,category,quantity
A1,ALICE,2024-01-01 10:00,20.00,EUR,Green tea,Food,2
A2,ALICE,2024-01-01 18:00,10.00,EUR,Biscuits,Food,1
A3,ALICE,2024-02-15 09:12,40.00,EUR,Lamp,Home,1
A4,ALICE,2024-05-01 12:00,25.50,EUR,Novel,Books,3
A4,ALICE,2024-05-01 12:00,4.50,EUR,Chocolate,Food,1
B1,BOB,2024-06-10 08:00,99.99,EUR,Headphones,Electronics,1
C1,CARLA,2023-12-31 23:30,15.00,EUR,Socks,Fashion,1
C2,CARLA,2024-03-10 16:45,25.00,EUR,Scarf,Fashion,1
C3,CARLA,2024-07-05 11:00,100.00,EUR,Coat,Fashion,1
"""


@pytest.fixture
def shop(transactional_db):
    return Source.objects.create(name="Shop export", kind=Source.Kind.POS)


def _traits(customer: str) -> ComputedTraits:
    identity = Identity.objects.get(kind="crm_id", value_hash=identity_hash("crm_id", customer))
    return ComputedTraits.objects.get(profile_id=identity.profile_id)


def test_frequency_recency_t_and_monetary_value_match_hand_computed_values(users, shop):
    job = run_import(user=users["dan"], source=shop, kind="transactions", content=HISTORY)
    assert (job.status, job.transactions_created, job.profiles_created) == ("succeeded", 8, 3)
    ids = list(Identity.objects.values_list("profile_id", flat=True))
    computed_traits_refresh(profile_ids=ids, as_of=AS_OF)

    alice = _traits("ALICE")
    # Purchase days 2024-01-01 (30.00 in two orders), 02-15 (40.00), 05-01 (30.00 in one 2-line order).
    assert alice.rfm_frequency == 2  # three purchase days, minus one
    assert alice.rfm_recency == 121.0  # 2024-01-01 -> 2024-05-01
    assert alice.rfm_t == 181.0  # 2024-01-01 -> 2024-06-30
    assert alice.rfm_monetary_value == Decimal("35.00")  # mean of the repeat days: (40 + 30) / 2
    assert (alice.order_count, alice.total_spent, alice.average_order_value) == (4, Decimal("100.00"),
                                                                                Decimal("25.00"))
    assert alice.first_purchase_at == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert alice.last_purchase_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert (alice.tenure_days, alice.favourite_category, alice.rfm_as_of) == (181, "Food", AS_OF)

    bob = _traits("BOB")  # one purchase: no repeat, monetary value 0 by convention
    assert (bob.rfm_frequency, bob.rfm_recency, bob.rfm_t, bob.rfm_monetary_value) == (0, 0.0, 20.0, Decimal("0.00"))

    carla = _traits("CARLA")  # the July order is after the analysis date and does not count
    assert (carla.rfm_frequency, carla.rfm_recency, carla.rfm_t, carla.rfm_monetary_value) == (
        1, 70.0, 182.0, Decimal("25.00"))
    assert (carla.order_count, carla.total_spent, carla.favourite_category) == (2, Decimal("40.00"), "Fashion")


def _ladder_file() -> bytes:
    """Customer Ki buys i times on distinct days, the last purchase (5 - i) * 10 days before AS_OF."""
    lines = ["order_id,customer_id,date,amount,currency"]
    for i in range(1, 6):
        last = AS_OF - timedelta(days=(5 - i) * 10)
        for n in range(i):
            lines.append(f"K{i}-{n},K{i},{(last - timedelta(days=n * 50)).isoformat()},{10 * i}.00,EUR")
    return ("\n".join(lines) + "\n").encode()


def test_quintile_scores_and_segment_labels_follow_the_rule_table(users, shop):
    run_import(user=users["dan"], source=shop, kind="transactions", content=_ladder_file())
    result = computed_traits_rebuild(as_of=AS_OF)
    assert result.profiles == 5
    scores = {k: (_traits(k).r_score, _traits(k).f_score, _traits(k).m_score, _traits(k).rfm_segment)
              for k in ("K1", "K2", "K3", "K4", "K5")}
    assert scores == {
        "K1": (1, 1, 1, "lost"),
        "K2": (2, 2, 2, "hibernating"),
        "K3": (3, 3, 3, "potential loyalist"),
        "K4": (4, 4, 4, "champions"),
        "K5": (5, 5, 5, "champions"),
    }
    # A rebuild with nothing changed writes nothing.
    assert computed_traits_rebuild(as_of=AS_OF).profiles == 0


def test_the_command_rebuilds_and_the_profile_page_shows_the_segment(users, shop, client):
    import io

    from django.core.management import call_command

    run_import(user=users["dan"], source=shop, kind="transactions", content=_ladder_file())
    out = io.StringIO()
    call_command("computed_traits_rebuild", "--as-of", AS_OF.isoformat(), stdout=out)
    assert out.getvalue().startswith("Computed traits written for 5 profiles")
    k5 = _traits("K5")
    client.force_login(users["dan"])
    page = client.get(f"/profiles/{k5.profile_id}/").content.decode()
    assert "champions" in page and "R 5 · F 5 · M 5" in page
