"""The allow-lists: which fields, property paths, operators and units a definition may name.

Nothing a user types ever becomes SQL text. Columns come from the tables below (our constants);
JSON keys and property paths must match a strict grammar and are bound as parameters
(`traits ->> %(p3)s`, `properties #>> %(p4)s`), so even a syntactically valid name cannot change
the query.
"""

import csv
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

STRING, NUMBER, DATETIME, BOOLEAN, JSON = "string", "number", "datetime", "boolean", "json"


@dataclass(frozen=True)
class Field:
    label: str
    table: str  # "p" (profiles_profile) or "c" (profiles_computedtraits)
    column: str
    type: str
    categorical: bool = False  # offer its values (with counts) in the builder


PROFILE_FIELDS = {
    "country": Field("country", "p", "country", STRING, True),
    "city": Field("city", "p", "city", STRING, True),
    "postcode": Field("postcode", "p", "postcode", STRING),
    "gender": Field("gender", "p", "gender", STRING, True),
    "age": Field("age", "p", "age", NUMBER),
    "birth_year": Field("birth year", "p", "birth_year", NUMBER),
    "income_band": Field("income band", "p", "income_band", STRING, True),
    "language": Field("language", "p", "language", STRING, True),
    "occupation": Field("occupation", "p", "occupation", STRING, True),
    "last_device_type": Field("last device type", "p", "last_device_type", STRING, True),
    "last_os": Field("last OS", "p", "last_os", STRING, True),
    "last_browser": Field("last browser", "p", "last_browser", STRING, True),
    "first_seen_at": Field("first seen", "p", "first_seen_at", DATETIME),
    "last_seen_at": Field("last seen", "p", "last_seen_at", DATETIME),
    "created_at": Field("profile created", "p", "created_at", DATETIME),
}
COMPUTED_FIELDS = {
    "computed.order_count": Field("number of orders", "c", "order_count", NUMBER),
    "computed.total_spent": Field("total spent", "c", "total_spent", NUMBER),
    "computed.average_order_value": Field("average order value", "c", "average_order_value", NUMBER),
    "computed.first_purchase_at": Field("first purchase", "c", "first_purchase_at", DATETIME),
    "computed.last_purchase_at": Field("last purchase", "c", "last_purchase_at", DATETIME),
    "computed.favourite_category": Field("favourite category", "c", "favourite_category", STRING, True),
    "computed.rfm_frequency": Field("RFM frequency", "c", "rfm_frequency", NUMBER),
    "computed.rfm_recency": Field("RFM recency (days)", "c", "rfm_recency", NUMBER),
    "computed.rfm_t": Field("RFM age (days)", "c", "rfm_t", NUMBER),
    "computed.rfm_monetary_value": Field("RFM monetary value", "c", "rfm_monetary_value", NUMBER),
    "computed.r_score": Field("recency score", "c", "r_score", NUMBER, True),
    "computed.f_score": Field("frequency score", "c", "f_score", NUMBER, True),
    "computed.m_score": Field("monetary score", "c", "m_score", NUMBER, True),
    "computed.rfm_segment": Field("RFM segment", "c", "rfm_segment", STRING, True),
}
TRAIT_PREFIX = "traits."

# Contextual conditions read the profile's technographics and location; city size comes from
# the shipped city table.
CONTEXT_FIELDS = {
    "device_type": PROFILE_FIELDS["last_device_type"],
    "os": PROFILE_FIELDS["last_os"],
    "browser": PROFILE_FIELDS["last_browser"],
    "country": PROFILE_FIELDS["country"],
    "city": PROFILE_FIELDS["city"],
}
CITY_SIZES = ("urban", "rural")

# Paths inside an event's `context` a condition may filter on (Segment-spec names).
CONTEXT_PATHS = {
    "context.device.type", "context.device.manufacturer", "context.device.model", "context.os.name",
    "context.browser.name", "context.location.city", "context.location.country", "context.timezone",
    "context.locale", "context.campaign.name", "context.campaign.source", "context.campaign.medium",
    "context.campaign.term", "context.campaign.content", "context.page.path", "context.page.title",
    "context.page.referrer", "context.app.name", "context.app.version",
}

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
PROPERTY_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}(\.[A-Za-z_][A-Za-z0-9_-]{0,63}){0,3}$")
EVENT_NAME_RE = re.compile(r"^[^\x00-\x1f]{1,200}$")

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
OPERATORS_BY_TYPE = {
    STRING: COMPARISONS[:2] + ("in", "not in", "contains", "starts with", "is set", "is not set"),
    NUMBER: COMPARISONS + ("between", "in", "not in", "is set", "is not set"),
    DATETIME: ("within last", "not within last", "before", "after", "between", "is set", "is not set"),
    BOOLEAN: ("=", "!=", "is set", "is not set"),
    # JSON traits: the value's type picks the comparison.
    JSON: COMPARISONS + ("between", "in", "not in", "contains", "starts with", "is set", "is not set",
                         "within last", "not within last", "before", "after"),
}
COUNT_OPERATORS = COMPARISONS + ("between",)
PROPERTY_OPERATORS = COMPARISONS + ("between", "in", "not in", "contains", "starts with", "is set", "is not set")
CONTEXT_OPERATORS = ("=", "!=", "in", "not in")
TIME_OPERATORS = ("within last", "not within last", "before", "after")

UNITS = {"minutes": timedelta(minutes=1), "hours": timedelta(hours=1), "days": timedelta(days=1),
         "weeks": timedelta(weeks=1)}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Named local-time buckets for activity conditions (hour from inclusive, to exclusive).
HOUR_BUCKETS = {"night": (0, 6), "morning": (6, 12), "lunch": (12, 14), "afternoon": (14, 17),
                "after_work": (17, 22), "late_evening": (22, 24)}


def trait_field(name: str) -> Field | None:
    """The Field a trait condition names, or None when the name is not allowed."""
    if name in PROFILE_FIELDS:
        return PROFILE_FIELDS[name]
    if name in COMPUTED_FIELDS:
        return COMPUTED_FIELDS[name]
    if name.startswith(TRAIT_PREFIX) and KEY_RE.match(name[len(TRAIT_PREFIX):]):
        return Field(name[len(TRAIT_PREFIX):], "p", "traits", JSON)
    return None


def property_path(name: str) -> tuple[str, list[str]] | None:
    """(json column, path) for an event filter: `context.x.y` (allow-listed) or a properties path."""
    if name.startswith("context."):
        return ("context", name.split(".")[1:]) if name in CONTEXT_PATHS else None
    if name.startswith("properties."):
        name = name[len("properties."):]
    return ("properties", name.split(".")) if PROPERTY_PATH_RE.match(name) else None


@lru_cache(maxsize=1)
def city_sizes() -> dict[str, tuple[list[str], list[str]]]:
    """size -> (countries, cities) from the shipped profiles/data/cities.csv."""
    path = Path(__file__).resolve().parents[2] / "profiles" / "data" / "cities.csv"
    sizes: dict[str, tuple[list[str], list[str]]] = {size: ([], []) for size in CITY_SIZES}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            size = row["size"].strip()
            if size in sizes:
                sizes[size][0].append(row["country"].strip())
                sizes[size][1].append(row["city"].strip())
    return sizes
