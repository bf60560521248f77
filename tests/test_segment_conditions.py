"""Every condition type against hand-computed expectations, window edges included."""

from datetime import timedelta as td

import pytest

from tests.segment_helpers import NOW, World, evaluation, members

pytestmark = pytest.mark.django_db

WEEK = {"last": 7, "unit": "days"}
SECOND = td(seconds=1)


def viewed(count, operator=">", window=None, where=None):
    node = {"type": "event", "event": "product_viewed", "window": window or WEEK,
            "count": {"operator": operator, "value": count}}
    if where:
        node["where"] = where
    return node


def test_event_count_exactly_three_versus_more_than_three():
    w = World()
    three, four = w.profile(), w.profile()
    w.events(three, "product_viewed", [td(days=1), td(days=2), td(days=3)])
    w.events(four, "product_viewed", [td(days=1), td(days=2), td(days=3), td(days=4)])
    assert members(viewed(3, ">")) == {four}
    assert members(viewed(3, ">=")) == {three, four}
    assert members(viewed(3, "=")) == {three}
    assert members(viewed([2, 3], "between")) == {three}


def test_window_edge_seven_days_minus_and_plus_a_second():
    w = World()
    inside, outside = w.profile(), w.profile()
    w.event(inside, "product_viewed", td(days=7) - SECOND)
    w.event(outside, "product_viewed", td(days=7) + SECOND)
    assert members(viewed(1, ">=")) == {inside}
    # Exactly seven days ago is already out: the window is open at its start.
    exact = w.profile()
    w.event(exact, "product_viewed", td(days=7))
    assert members(viewed(1, ">=")) == {inside}


def test_fixed_date_window_includes_from_and_excludes_to():
    w = World()
    at_from, at_to = w.profile(), w.profile()
    w.event(at_from, "product_viewed", NOW - NOW.replace(day=1, hour=0))  # 2026-11-01T00:00Z
    w.event(at_to, "product_viewed", NOW - NOW.replace(day=10, hour=0))  # 2026-11-10T00:00Z
    window = {"from": "2026-11-01", "to": "2026-11-10"}
    assert members(viewed(1, ">=", window)) == {at_from}


def test_zero_counts_include_people_without_any_event():
    w = World()
    idle, active, buyer = w.profile(), w.profile(), w.profile()
    w.event(active, "product_viewed", td(days=1))
    w.event(buyer, "order_completed", td(days=2))
    assert members({"type": "event", "event": "order_completed", "window": WEEK,
                    "count": {"operator": "=", "value": 0}}) == {idle, active}
    assert members({"type": "not", "condition": viewed(0, ">")}) == {idle, buyer}
    assert members(viewed(1, "<")) == {idle, buyer}


def test_property_filters_match_values_lists_numbers_and_context():
    w = World()
    shoes, books, cheap, campaign = w.profile(), w.profile(), w.profile(), w.profile()
    w.event(shoes, "product_viewed", td(hours=3), properties={"category": "shoes", "price": 89.0, "product_id": "sku-42"})
    w.event(books, "product_viewed", td(hours=3), properties={"category": "books", "price": 18})
    w.event(cheap, "product_viewed", td(hours=3), properties={"category": "shoes", "price": "9.50"})
    w.event(campaign, "product_viewed", td(hours=3), properties={"category": "toys"},
            context={"campaign": {"name": "weekly_deals"}})
    where = lambda *filters: viewed(1, ">=", where=list(filters))  # noqa: E731
    assert members(where({"property": "category", "operator": "=", "value": "shoes"})) == {shoes, cheap}
    assert members(where({"property": "category", "operator": "in", "value": ["books", "toys"]})) == {books, campaign}
    assert members(where({"property": "category", "operator": "not in", "value": ["shoes"]})) == {books, campaign}
    assert members(where({"property": "price", "operator": ">", "value": 10})) == {shoes, books}
    assert members(where({"property": "price", "operator": "between", "value": [5, 20]})) == {books, cheap}
    assert members(where({"property": "product_id", "operator": "=", "value": "sku-42"})) == {shoes}
    assert members(where({"property": "category", "operator": "starts with", "value": "SH"})) == {shoes, cheap}
    assert members(where({"property": "category", "operator": "contains", "value": "OE"})) == {shoes, cheap}
    assert members(where({"property": "product_id", "operator": "is set"})) == {shoes}
    assert members(where({"property": "context.campaign.name", "operator": "=", "value": "weekly_deals"})) == {campaign}


def test_event_time_first_and_last_occurrence():
    w = World()
    recent, lapsed, new = w.profile(), w.profile(), w.profile()
    w.events(recent, "product_viewed", [td(days=40), td(days=2)])
    w.events(lapsed, "product_viewed", [td(days=40), td(days=20)])
    w.event(new, "product_viewed", td(days=3))
    node = {"type": "event_time", "event": "product_viewed", "occurrence": "last", "operator": "within last",
            "value": 7, "unit": "days"}
    assert members(node) == {recent, new}
    assert members({**node, "operator": "not within last"}) == {lapsed}
    assert members({**node, "occurrence": "first"}) == {new}
    assert members({"type": "event_time", "event": "product_viewed", "occurrence": "first", "operator": "before",
                    "value": "2026-10-20"}) == {recent, lapsed}
    assert members({"type": "event_time", "event": "product_viewed", "occurrence": "last", "operator": "after",
                    "value": "2026-11-15"}) == {recent, new}


def cart_abandoners(within=10):
    return {"type": "sequence", "first": {"event": "added_to_cart"}, "then": {"event": "checkout_started"},
            "absent": True, "within": {"value": within, "unit": "minutes"}, "window": {"last": 1, "unit": "days"}}


def test_sequence_with_absence_added_to_cart_and_no_checkout_within_ten_minutes():
    w = World()
    checked_out, late_checkout, abandoned, pending, old = (w.profile() for _ in range(5))
    w.event(checked_out, "added_to_cart", td(hours=2))
    w.event(checked_out, "checkout_started", td(hours=2) - td(minutes=5))
    w.event(late_checkout, "added_to_cart", td(hours=2))
    w.event(late_checkout, "checkout_started", td(hours=2) - td(minutes=11))
    w.event(abandoned, "added_to_cart", td(minutes=20))
    w.event(pending, "added_to_cart", td(minutes=4))
    w.event(old, "added_to_cart", td(days=2))
    assert members(cart_abandoners()) == {late_checkout, abandoned}
    # Exactly 10 minutes without a checkout is enough; 10 minutes minus a second is not yet.
    edge, almost = w.profile(), w.profile()
    w.event(edge, "added_to_cart", td(minutes=10))
    w.event(almost, "added_to_cart", td(minutes=10) - SECOND)
    assert members(cart_abandoners()) == {late_checkout, abandoned, edge}
    # The pending ones carry the moment they will qualify.
    result = evaluation(cart_abandoners(), profile_ids=[pending, almost, checked_out])
    assert result[pending] == (False, NOW - td(minutes=4) + td(minutes=10))
    assert result[almost] == (False, NOW + SECOND)


def test_sequence_that_happened_within_a_time():
    w = World()
    quick, slow = w.profile(), w.profile()
    w.event(quick, "added_to_cart", td(hours=3))
    w.event(quick, "checkout_started", td(hours=3) - td(minutes=2))
    w.event(slow, "added_to_cart", td(hours=3))
    w.event(slow, "checkout_started", td(hours=1))
    node = {**cart_abandoners(), "absent": False}
    assert members(node) == {quick}


def test_transactions_count_sum_average_category_and_days_since_last():
    w = World()
    two_shoes, big_spender, never, lapsed = w.profile(), w.profile(), w.profile(), w.profile()
    w.order(two_shoes, 50, td(days=3), ["shoes"])
    w.order(two_shoes, 70, td(days=10), ["shoes", "apparel"])
    w.order(big_spender, 900, td(days=5), ["electronics"])
    w.order(lapsed, 30, td(days=45), ["books"])
    quarter = {"last": 90, "unit": "days"}
    count = {"type": "transaction", "measure": "count", "window": quarter, "operator": ">=", "value": 2}
    assert members(count) == {two_shoes}
    assert members({**count, "category": ["shoes"], "value": 1}) == {two_shoes}
    assert members({**count, "category": ["apparel"], "value": 1}) == {two_shoes}
    assert members({**count, "operator": "=", "value": 0}) == {never}
    assert members({"type": "transaction", "measure": "sum", "window": quarter, "operator": ">", "value": 119}) == {
        two_shoes, big_spender}
    assert members({"type": "transaction", "measure": "average", "window": quarter, "operator": "<", "value": 61}) == {
        two_shoes, lapsed}
    since = {"type": "transaction", "measure": "days_since_last", "operator": ">", "value": 30}
    assert members(since) == {lapsed}  # never bought: no last purchase, not counted
    assert members({**since, "operator": "<=", "value": 3}) == {two_shoes}


def test_traits_columns_computed_and_json():
    w = World()
    anna = w.profile(country="DE", city="Berlin", age=34, gender="female", traits={"newsletter": True, "tier": "gold",
                                                                                  "visits": 12, "signup_at": "2026-11-18"})
    ben = w.profile(country="FR", city="Lyon", age=61, traits={"newsletter": False, "visits": "many",
                                                               "signup_at": "2026-13-45"})
    cleo = w.profile(country="", age=None, traits={})
    w.computed(anna, r_score=5, f_score=4, m_score=4, order_count=7)
    w.computed(ben, r_score=2, f_score=5, m_score=5, order_count=1)
    trait = lambda field, operator, value=None, **extra: {"type": "trait", "field": field, "operator": operator,  # noqa: E731
                                                          **({"value": value} if value is not None else {}), **extra}
    assert members(trait("country", "=", "DE")) == {anna}
    assert members(trait("country", "!=", "DE")) == {ben, cleo}
    assert members(trait("country", "in", ["DE", "FR"])) == {anna, ben}
    assert members(trait("country", "is not set")) == {cleo}
    assert members(trait("city", "starts with", "ly")) == {ben}
    assert members(trait("age", "between", [30, 40])) == {anna}
    assert members(trait("age", "is set")) == {anna, ben}
    assert members({"type": "not", "condition": trait("age", ">", 40)}) == {anna, cleo}
    assert members(trait("computed.r_score", ">=", 4)) == {anna}
    assert members(trait("computed.order_count", "<", 5)) == {ben}
    assert members(trait("traits.newsletter", "=", True)) == {anna}
    assert members(trait("traits.visits", ">", 10)) == {anna}  # "many" is not a number: no error, no match
    assert members(trait("traits.tier", "in", ["gold", "silver"])) == {anna}
    assert members(trait("traits.tier", "is not set")) == {ben, cleo}
    assert members(trait("traits.signup_at", "within last", 7, unit="days")) == {anna}  # 2026-13-45 is no date
    assert members(trait("last_seen_at", "within last", 1, unit="days")) == set()  # last seen exactly 1 day ago
    assert members(trait("last_seen_at", "within last", 25, unit="hours")) == {anna, ben, cleo}
    assert members(trait("first_seen_at", "is not set")) == {anna, ben, cleo}


def test_contextual_device_city_and_city_size():
    w = World()
    berlin = w.profile(country="DE", city="Berlin", last_device_type="mobile", last_os="iOS")
    village = w.profile(country="DE", city="Rural Region", last_device_type="desktop")
    nowhere = w.profile(country="DE", city="Atlantis", last_device_type="mobile")
    from segments.evaluation.fields import city_sizes

    rural_de = [city for country, city in zip(*city_sizes()["rural"], strict=True) if country == "DE"]
    assert rural_de, "the shipped city table has rural places in DE"
    from profiles.models import Profile

    Profile.objects.filter(pk=village).update(city=rural_de[0])
    context = lambda field, operator, value: {"type": "context", "field": field, "operator": operator, "value": value}  # noqa: E731
    assert members(context("device_type", "=", "mobile")) == {berlin, nowhere}
    assert members(context("os", "in", ["iOS", "Android"])) == {berlin}
    assert members(context("city_size", "=", "urban")) == {berlin}
    assert members(context("city_size", "=", "rural")) == {village}
    assert members(context("city_size", "!=", "urban")) == {village}  # unknown cities have no size
    assert members(context("city", "=", "Berlin")) == {berlin}


def test_activity_in_local_hours_and_weekdays():
    # NOW is Friday 2026-11-20 18:00 UTC; Berlin is UTC+1 in November.
    w = World()
    evening, afternoon, weekend, bad_zone = w.profile(), w.profile(), w.profile(), w.profile()
    berlin = {"timezone": "Europe/Berlin"}
    w.events(evening, "product_viewed", [td(hours=0, minutes=30), td(days=1), td(days=2)], context=berlin)  # 18:30 local
    w.events(afternoon, "product_viewed", [td(hours=2, minutes=30)] * 3, context=berlin)  # 16:30 local
    w.events(weekend, "product_viewed", [td(days=6), td(days=6, minutes=5), td(days=6, minutes=10)], context=berlin)
    w.events(bad_zone, "product_viewed", [td(minutes=10)] * 3, context={"timezone": "Mars/Olympus'; --"})
    node = {"type": "activity", "hours": "after_work", "weekdays": ["mon", "tue", "wed", "thu", "fri"],
            "window": {"last": 30, "unit": "days"}, "count": {"operator": ">=", "value": 3}}
    # bad_zone falls back to UTC: 17:50 UTC counts as after work, without any error.
    assert members(node) == {evening, bad_zone}
    assert members({**node, "weekdays": ["sat"]}) == {weekend}
    assert members({**node, "hours": {"from": 16, "to": 17}}) == {afternoon}
    # Wrapping past midnight (22 h to 19 h): views at 19:00 local (evening on Wed and Thu, one of
    # weekend's) fall outside, so only three views before 19 h qualify.
    assert members({**node, "hours": {"from": 22, "to": 19}, "weekdays": None}) == {afternoon, bad_zone}


def test_segment_membership_conditions(users):
    from django.test import TestCase  # noqa: F401 - keeps pytest-django's transaction handling explicit

    from segments.models import SegmentRun
    from segments.services.definitions import segment_create
    from segments.services.recompute import segment_recompute

    w = World()
    german, french = w.profile(country="DE"), w.profile(country="FR")
    segment = segment_create(actor=users["alice"], key="germans", name="Germans",
                             definition={"version": 1, "root": {"type": "trait", "field": "country", "operator": "=",
                                                                "value": "DE"}})
    segment_recompute(run_id=SegmentRun.objects.get(segment=segment).pk)
    ids = {"germans": segment.pk}
    assert members({"type": "segment", "operator": "in", "segment": "germans"}, segment_ids=ids) == {german}
    assert members({"type": "segment", "operator": "not in", "segment": "germans"}, segment_ids=ids) == {french}


def test_merged_profiles_never_match():
    from profiles.models import Profile

    w = World()
    survivor, absorbed = w.profile(country="DE"), w.profile(country="DE")
    Profile.objects.filter(pk=absorbed).update(merged_into=survivor)
    assert members({"type": "trait", "field": "country", "operator": "=", "value": "DE"}) == {survivor}


def test_nested_and_or_not():
    w = World()
    a = w.profile(country="DE", last_device_type="mobile")
    b = w.profile(country="FR", last_device_type="mobile")
    c = w.profile(country="DE", last_device_type="desktop")
    w.events(a, "product_viewed", [td(days=1)] * 4)
    w.events(c, "product_viewed", [td(days=1)])
    tree = {"type": "and", "conditions": [
        {"type": "or", "conditions": [{"type": "trait", "field": "country", "operator": "=", "value": "DE"},
                                      {"type": "context", "field": "device_type", "operator": "=", "value": "mobile"}]},
        {"type": "not", "condition": viewed(3)},
    ]}
    assert members(tree) == {b, c}


def test_restricted_evaluation_agrees_with_the_full_query():
    w = World()
    people = [w.profile(country="DE" if i % 2 else "FR") for i in range(12)]
    for index, person in enumerate(people):
        w.events(person, "product_viewed", [td(days=1 + d) for d in range(index % 6)])
    tree = {"type": "and", "conditions": [{"type": "trait", "field": "country", "operator": "=", "value": "DE"},
                                          viewed(2)]}
    full = members(tree)
    assert full == {p for i, p in enumerate(people) if i % 2 and i % 6 > 2}
    subset = people[::3]
    assert members(tree, profile_ids=subset) == full & set(subset)
    # Restricted, the aggregates read only the ids whose profile row passes the country first
    # (a second compilation); rows and timers are the full query's.
    restricted = evaluation(tree, profile_ids=subset)
    assert restricted == {key: value for key, value in evaluation(tree).items() if key in subset}
    assert restricted and all(timer is not None for _, timer in restricted.values())


def test_next_change_at_for_sliding_windows_and_days_since_last():
    w = World()
    member, near, buyer = w.profile(), w.profile(), w.profile()
    w.events(member, "product_viewed", [td(days=6), td(days=2), td(days=1), td(hours=1)])
    w.events(near, "product_viewed", [td(days=5)])
    w.order(buyer, 20, td(days=20))
    result = evaluation(viewed(3))
    # Only the member gets a timer: its oldest view in the window lapses first.
    assert result == {member: (True, NOW - td(days=6) + td(days=7))}
    since = evaluation({"type": "transaction", "measure": "days_since_last", "operator": ">", "value": 30})
    assert since == {buyer: (False, NOW - td(days=20) + td(days=30))}
    within = evaluation({"type": "trait", "field": "last_seen_at", "operator": "within last", "value": 3,
                         "unit": "days"})
    assert within[member] == (True, NOW - td(days=1) + td(days=3))


def test_only_profiles_whose_overall_answer_can_move_get_a_timer():
    w = World()
    german_viewer, french_viewer, german_idle = w.profile(country="DE"), w.profile(country="FR"), w.profile(country="DE")
    german_cart, french_cart = w.profile(country="DE"), w.profile(country="FR")
    w.event(german_viewer, "product_viewed", td(days=2))
    w.event(french_viewer, "product_viewed", td(days=2))
    w.event(german_cart, "added_to_cart", td(minutes=4))
    w.event(french_cart, "added_to_cart", td(minutes=4))
    german = {"type": "trait", "field": "country", "operator": "=", "value": "DE"}
    viewer = viewed(1, ">=")
    # AND: a member leaves when its view lapses; a French viewer can never enter by time.
    assert evaluation({"type": "and", "conditions": [german, viewer]}) == {
        german_viewer: (True, NOW - td(days=2) + td(days=7))}
    # OR: the German viewer stays in through its country, so its lapsing view changes nothing.
    assert evaluation({"type": "or", "conditions": [german, viewer]}) == {
        german_viewer: (True, None), german_idle: (True, None), german_cart: (True, None),
        french_viewer: (True, NOW - td(days=2) + td(days=7))}
    # A pending cart abandoner enters by time only where the other condition already holds.
    assert evaluation({"type": "and", "conditions": [german, cart_abandoners()]}) == {
        german_cart: (False, NOW - td(minutes=4) + td(minutes=10))}
    # NOT keeps the child's moment.
    assert evaluation({"type": "not", "condition": viewer})[french_viewer] == (False, NOW - td(days=2) + td(days=7))
