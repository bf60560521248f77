"""The shipped templates return exactly the people built to match, and none of the near misses."""

from datetime import timedelta as td

import pytest

from profiles.models import Profile
from segments.evaluation.fields import city_sizes
from segments.presets import PRESETS, preset_definition
from tests.segment_helpers import World, members

pytestmark = pytest.mark.django_db

BERLIN = {"timezone": "Europe/Berlin"}  # NOW (Friday 18:00 UTC) is 19:00 in Berlin


def test_every_template_has_a_test_below():
    assert set(PRESETS) == {"product_explorers", "high_intent_cart_abandoners", "deal_seekers", "champions",
                            "seasonal_browsers", "mobile_urban_after_work", "recently_viewed_product_x"}


def test_product_explorers():
    w = World()
    explorer, three_views, bought, one_aged_out = (w.profile() for _ in range(4))
    w.events(explorer, "product_viewed", [td(days=d) for d in (1, 2, 4, 6)])
    w.events(three_views, "product_viewed", [td(days=d) for d in (1, 2, 3)])
    w.events(bought, "product_viewed", [td(days=d) for d in (1, 2, 3, 4, 5)])
    w.event(bought, "order_completed", td(days=2))
    w.events(one_aged_out, "product_viewed", [td(days=1), td(days=2), td(days=3), td(days=7, seconds=1)])
    assert members(preset_definition("product_explorers")) == {explorer}


def test_high_intent_cart_abandoners():
    w = World()
    abandoned, checked_out, still_deciding, long_ago = (w.profile() for _ in range(4))
    w.event(abandoned, "added_to_cart", td(minutes=30))
    w.event(checked_out, "added_to_cart", td(minutes=30))
    w.event(checked_out, "checkout_started", td(minutes=25))
    w.event(still_deciding, "added_to_cart", td(minutes=3))
    w.event(long_ago, "added_to_cart", td(days=2))
    assert members(preset_definition("high_intent_cart_abandoners")) == {abandoned}


def test_deal_seekers():
    w = World()
    seeker, once, brand, aged = (w.profile() for _ in range(4))
    deal = lambda name: {"campaign": {"name": name, "medium": "email"}}  # noqa: E731
    w.event(seeker, "Home", td(days=3), type="page", context=deal("weekly_deals"))
    w.event(seeker, "Home", td(days=9), type="page", context=deal("deal_sites"))
    w.event(once, "Home", td(days=3), type="page", context=deal("weekly_deals"))
    w.events(brand, "Home", [td(days=3), td(days=4)], type="page", context=deal("brand_search"))
    w.event(aged, "Home", td(days=3), type="page", context=deal("weekly_deals"))
    w.event(aged, "Home", td(days=31), type="page", context=deal("weekly_deals"))
    assert members(preset_definition("deal_seekers")) == {seeker}


def test_loyal_buyers_champions_from_rfm_scores():
    w = World()
    champion, big_but_rare = w.profile(), w.profile()
    w.profile()  # no computed traits at all
    w.computed(champion, r_score=5, f_score=4, m_score=4, rfm_segment="champions")
    w.computed(big_but_rare, r_score=5, f_score=5, m_score=3)
    assert members(preset_definition("champions")) == {champion}
    assert members(preset_definition("champions", {"min_score": 3})) == {champion, big_but_rare}


def test_seasonal_browsers():
    w = World()
    params = {"season_from": "2026-09-01", "season_to": "2026-09-15"}
    in_season = w.now - w.now.replace(month=9, day=5)  # 2026-09-05 18:00
    seasonal, came_back, two_views = w.profile(), w.profile(), w.profile()
    w.events(seasonal, "product_viewed", [in_season, in_season - td(hours=1), in_season - td(days=2)])
    w.events(came_back, "product_viewed", [in_season, in_season - td(hours=1), in_season - td(days=2), td(days=10)])
    w.events(two_views, "product_viewed", [in_season, in_season - td(hours=1)])
    assert members(preset_definition("seasonal_browsers", params)) == {seasonal}


def test_mobile_urban_after_work_browsers():
    w = World()
    rural_city = city_sizes()["rural"][1][0]
    rural_country = city_sizes()["rural"][0][0]
    fan = w.profile(country="DE", city="Berlin", last_device_type="mobile")
    desktop = w.profile(country="DE", city="Berlin", last_device_type="desktop")
    countryside = w.profile(country=rural_country, city=rural_city, last_device_type="mobile")
    lunch = w.profile(country="DE", city="Berlin", last_device_type="mobile")
    evenings = [td(minutes=30), td(days=1, minutes=30), td(days=2, minutes=30)]  # 18:30 local, Wed to Fri
    for person in (fan, desktop, countryside):
        w.events(person, "product_viewed", evenings, context=BERLIN)
    w.events(lunch, "product_viewed", [td(hours=5), td(days=1, hours=5), td(days=2, hours=5)], context=BERLIN)
    assert Profile.objects.get(pk=countryside).city == rural_city
    assert members(preset_definition("mobile_urban_after_work")) == {fan}
    everyone = list(Profile.objects.values_list("id", flat=True))
    assert members(preset_definition("mobile_urban_after_work"), profile_ids=everyone) == {fan}


def test_recently_viewed_product_x():
    w = World()
    viewer, too_long_ago, other_product = w.profile(), w.profile(), w.profile()
    w.event(viewer, "product_viewed", td(days=2), properties={"product_id": "sku-42", "sku": "sku-42"})
    w.event(too_long_ago, "product_viewed", td(days=4), properties={"product_id": "sku-42"})
    w.event(other_product, "product_viewed", td(days=1), properties={"product_id": "sku-43"})
    assert members(preset_definition("recently_viewed_product_x", {"product_id": "sku-42"})) == {viewer}


def test_template_defaults_are_valid_on_demo_shaped_data_and_unknown_templates_are_refused():
    from segments.errors import SegmentError
    from segments.evaluation import validate

    for key in PRESETS:
        validate(preset_definition(key))
    with pytest.raises(SegmentError) as failure:
        preset_definition("nope")
    assert failure.value.status == 404
    with pytest.raises(SegmentError, match="has no parameter"):
        preset_definition("champions", {"bogus": 1})
