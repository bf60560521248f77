"""Ready-made segment templates (the seeds' examples), each a definition with a few parameters."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.utils import timezone

from segments.errors import SegmentError


@dataclass(frozen=True)
class Param:
    label: str
    type: str  # "int", "text", "date", "list"
    default: object = None


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    description: str
    build: Callable[[dict], dict]
    params: dict[str, Param] = field(default_factory=dict)
    schedule_minutes: int | None = 60


def _event(name, count, window, where=None) -> dict:
    node = {"type": "event", "event": name, "window": window, "count": count}
    if where:
        node["where"] = where
    return node


def _last(amount: int, unit: str = "days") -> dict:
    return {"last": amount, "unit": unit}


def _product_explorers(p: dict) -> dict:
    week = _last(p["days"])
    return {"type": "and", "conditions": [
        _event("product_viewed", {"operator": ">", "value": p["min_views"]}, week),
        _event("order_completed", {"operator": "=", "value": 0}, week),
    ]}


def _cart_abandoners(p: dict) -> dict:
    return {"type": "sequence", "first": {"event": "added_to_cart"}, "then": {"event": "checkout_started"},
            "absent": True, "within": {"value": p["minutes"], "unit": "minutes"}, "window": _last(p["lookback_days"])}


def _deal_seekers(p: dict) -> dict:
    return _event("Home", {"operator": ">=", "value": p["min_visits"]}, _last(p["days"]),
                  [{"property": "context.campaign.name", "operator": "in", "value": p["campaigns"]}])


def _champions(p: dict) -> dict:
    return {"type": "and", "conditions": [
        {"type": "trait", "field": f"computed.{score}", "operator": ">=", "value": p["min_score"]}
        for score in ("r_score", "f_score", "m_score")]}


def _seasonal(p: dict) -> dict:
    return {"type": "and", "conditions": [
        _event("product_viewed", {"operator": ">=", "value": p["min_views"]},
               {"from": str(p["season_from"]), "to": str(p["season_to"])}),
        _event("product_viewed", {"operator": "=", "value": 0}, _last(p["quiet_days"])),
    ]}


def _mobile_urban_after_work(p: dict) -> dict:
    return {"type": "and", "conditions": [
        {"type": "context", "field": "device_type", "operator": "=", "value": "mobile"},
        {"type": "context", "field": "city_size", "operator": "=", "value": "urban"},
        {"type": "activity", "hours": "after_work", "weekdays": ["mon", "tue", "wed", "thu", "fri"],
         "window": _last(p["days"]), "count": {"operator": ">=", "value": p["min_events"]}},
    ]}


def _recently_viewed(p: dict) -> dict:
    return _event("product_viewed", {"operator": ">=", "value": 1}, _last(p["days"]),
                  [{"property": "product_id", "operator": "=", "value": p["product_id"]}])


def _season_default(offset_days: int) -> date:
    return (timezone.now() - timedelta(days=offset_days)).date()


PRESETS: dict[str, Preset] = {preset.key: preset for preset in [
    Preset("product_explorers", "Product Explorers",
           "Viewed products more than 3 times in the last week and bought nothing in that week.",
           _product_explorers, {"min_views": Param("more than … product views", "int", 3),
                                "days": Param("in the last … days", "int", 7)}),
    Preset("high_intent_cart_abandoners", "High-Intent Cart Abandoners",
           "Added something to the cart and did not start checkout within 10 minutes (in the last day).",
           _cart_abandoners, {"minutes": Param("no checkout within … minutes", "int", 10),
                              "lookback_days": Param("cart added in the last … days", "int", 1)}, 15),
    Preset("deal_seekers", "Deal Seekers",
           "Came in through deal campaigns (weekly deals newsletter, deal sites) at least twice in 30 days.",
           _deal_seekers, {"campaigns": Param("campaign names", "list", ["weekly_deals", "deal_sites"]),
                           "min_visits": Param("at least … visits", "int", 2),
                           "days": Param("in the last … days", "int", 30)}),
    Preset("champions", "Loyal Buyers / Champions",
           "Top RFM scores: bought recently, often and for a lot (computed traits).",
           _champions, {"min_score": Param("every RFM score at least", "int", 4)}, 1440),
    Preset("seasonal_browsers", "Seasonal Browsers",
           "Browsed products during a sale season (back to school, Black Friday, ...) but not in the last 30 days.",
           _seasonal, {"season_from": Param("season from", "date", None), "season_to": Param("season to", "date", None),
                       "min_views": Param("at least … product views in the season", "int", 3),
                       "quiet_days": Param("no product views in the last … days", "int", 30)}, 1440),
    Preset("mobile_urban_after_work", "Mobile Urban After-Work Browsers",
           "On a phone, in a city, active after work (17–22 h local time) on weekdays at least 3 times in 30 days.",
           _mobile_urban_after_work, {"min_events": Param("at least … events after work", "int", 3),
                                      "days": Param("in the last … days", "int", 30)}),
    Preset("recently_viewed_product_x", "Recently Viewed Product X",
           "Viewed one product (by product id) in the last 3 days.",
           _recently_viewed, {"product_id": Param("product id", "text", None),
                              "days": Param("in the last … days", "int", 3)}, 15),
]}


def preset_defaults(preset: Preset) -> dict:
    values = {name: param.default for name, param in preset.params.items()}
    if preset.key == "seasonal_browsers":
        values["season_from"] = values["season_from"] or _season_default(80)
        values["season_to"] = values["season_to"] or _season_default(50)
    if preset.key == "recently_viewed_product_x" and not values["product_id"]:
        from segments.selectors import catalog_property_values

        top = catalog_property_values(event="product_viewed", prop="product_id")
        values["product_id"] = top[0]["value"] if top else "sku-1"
    return values


def preset_definition(key: str, params: dict | None = None) -> dict:
    """The definition of template `key` with `params` over its defaults."""
    preset = PRESETS.get(key)
    if preset is None:
        raise SegmentError("unknown_template", f"There is no template {key!r}.", status=404)
    values = preset_defaults(preset)
    for name, value in (params or {}).items():
        if name not in preset.params:
            raise SegmentError("invalid_template_parameter", f"Template {key} has no parameter {name!r}.")
        values[name] = value
    return {"version": 1, "root": preset.build(values)}
