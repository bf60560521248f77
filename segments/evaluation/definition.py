"""The condition language: validation with clear messages (which node, what is wrong) and limits.

A definition is `{"version": 1, "root": <node>}`. Node types (one validator function each,
registered in NODE_VALIDATORS; the compiler and the sentence writer have one function per type
too):

- and / or: {"type": "and", "conditions": [...]};  not: {"type": "not", "condition": {...}}
- trait: {"type": "trait", "field": "country" | "computed.r_score" | "traits.<key>",
  "operator": "=", "value": ...}; date fields: "within last" / "not within last" (value + unit),
  "before" / "after" (ISO date), "between"
- event: {"type": "event", "event": "product_viewed", "where": [filters], "window": W,
  "count": {"operator": ">", "value": 3}}, W = {"last": 7, "unit": "days"} or
  {"from": ISO, "to": ISO}
- event_time: {"type": "event_time", "event": ..., "where": [...], "occurrence": "first"|"last",
  "operator": "within last"|"not within last"|"before"|"after", "value": ..., "unit": ...}
- sequence: {"type": "sequence", "first": {"event", "where"}, "then": {"event", "where"},
  "absent": true, "within": {"value": 10, "unit": "minutes"}, "window": W}
  ("added to cart and no checkout within 10 minutes" is absent=true)
- transaction: {"type": "transaction", "measure": "count"|"sum"|"average"|"days_since_last",
  "window": W, "category": [...], "operator": ">=", "value": 2}
- context: {"type": "context", "field": "device_type"|"os"|"browser"|"country"|"city"|"city_size",
  "operator": "="|"!="|"in"|"not in", "value": ...}
- activity: {"type": "activity", "hours": "after_work" | {"from": 17, "to": 22},
  "weekdays": ["mon", ...], "event": optional, "window": W, "count": {...}}
- segment: {"type": "segment", "operator": "in"|"not in", "segment": "<key>"}
- consent: {"type": "consent", "purpose": "<key>"}: the purpose is granted now (services check
  that the purpose exists; consent.enforcement compiles it, fail closed)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import orjson

from segments.evaluation import fields as F

VERSION = 1
MAX_DEPTH = 6
MAX_NODES = 40
MAX_LIST = 500
MAX_STRING = 200
MAX_FILTERS = 10
MAX_WINDOW_DAYS = 730
MAX_SEQUENCE_GAP_DAYS = 30
MAX_COUNT = 1_000_000
MAX_NUMBER = 1e12
MAX_BYTES = 32_768


class DefinitionError(ValueError):
    """A definition that cannot be used; `errors` lists {path, message} for every problem found."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first['path']}: {first['message']}{more}")


@dataclass
class Analysis:
    """What a valid definition reads: drives real-time dependency matching and scheduling."""

    event_names: set[str] = field(default_factory=set)
    trait_names: set[str] = field(default_factory=set)
    segment_keys: set[str] = field(default_factory=set)
    any_event: bool = False
    is_time_based: bool = False
    uses_transactions: bool = False
    uses_consent: bool = False
    purposes: set[str] = field(default_factory=set)


class _Validator:
    def __init__(self):
        self.errors: list[dict] = []
        self.nodes = 0
        self.analysis = Analysis()

    def fail(self, path: str, message: str) -> None:
        self.errors.append({"path": path, "message": message})

    def trait_dependency(self, name: str) -> None:
        self.analysis.trait_names.add(name)

    # -- scalar helpers -----------------------------------------------------------------------
    def string(self, value, path: str, *, what: str = "value") -> bool:
        if not isinstance(value, str):
            self.fail(path, f"{what} must be a string")
            return False
        if len(value) > MAX_STRING:
            self.fail(path, f"{what} is longer than {MAX_STRING} characters")
            return False
        if "\x00" in value:
            self.fail(path, f"{what} contains a NUL character")
            return False
        return True

    def number(self, value, path: str, *, integer: bool = False, minimum: float | None = None,
               maximum: float = MAX_NUMBER) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not math.isfinite(value)):
            self.fail(path, "must be a number")
            return False
        if integer and not float(value).is_integer():
            self.fail(path, "must be a whole number")
            return False
        if minimum is not None and value < minimum:
            self.fail(path, f"must be at least {minimum:g}")
            return False
        if abs(value) > maximum:
            self.fail(path, f"must be at most {maximum:g}")
            return False
        return True

    def datetime_value(self, value, path: str) -> bool:
        if parse_datetime(value) is None:
            self.fail(path, "must be an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T18:00:00Z")
            return False
        return True

    def keys(self, node: dict, path: str, allowed: set[str]) -> None:
        unknown = sorted(set(node) - allowed - {"type"})
        if unknown:
            self.fail(path, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}")

    def choice(self, value, path: str, options, *, what: str = "operator") -> bool:
        if value is None:
            self.fail(path, f"{what} is missing; allowed: {', '.join(map(str, options))}")
            return False
        if value not in options:
            shown = value if isinstance(value, str) and len(value) <= 40 else "(not a known value)"
            self.fail(path, f"unknown {what} {shown!r}; allowed: {', '.join(map(str, options))}")
            return False
        return True

    def amount_unit(self, node: dict, path: str, *, max_days: int, value_key: str = "value") -> None:
        if not self.number(node.get(value_key), f"{path}.{value_key}", integer=True, minimum=1, maximum=10**6):
            return
        if not self.choice(node.get("unit"), f"{path}.unit", tuple(F.UNITS), what="unit"):
            return
        if F.UNITS[node["unit"]] * node[value_key] > F.UNITS["days"] * max_days:
            self.fail(path, f"the period is longer than {max_days} days")

    def window(self, node, path: str, *, required: bool = True) -> None:
        if node is None and not required:
            return
        if not isinstance(node, dict):
            self.fail(path, 'window must be {"last": 7, "unit": "days"} or {"from": "2026-01-01", "to": "2026-02-01"}')
            return
        if "last" in node:
            self.keys(node, path, {"last", "unit"})
            self.amount_unit(node, path, max_days=MAX_WINDOW_DAYS, value_key="last")
            self.analysis.is_time_based = True
        elif "from" in node or "to" in node:
            self.keys(node, path, {"from", "to"})
            start, end = parse_datetime(node.get("from")), parse_datetime(node.get("to"))
            if start is None:
                self.fail(f"{path}.from", "must be an ISO 8601 date or date-time")
            if end is None:
                self.fail(f"{path}.to", "must be an ISO 8601 date or date-time")
            if start and end and start >= end:
                self.fail(path, "from must be before to")
        else:
            self.fail(path, 'window needs "last" + "unit", or "from" + "to"')

    def comparison(self, node, path: str, *, minimum: float = 0) -> None:
        """{"operator": ..., "value": ...} on a count or amount."""
        if not isinstance(node, dict):
            self.fail(path, 'must be {"operator": ">=", "value": 1}')
            return
        self.keys(node, path, {"operator", "value"})
        operator = node.get("operator")
        if not self.choice(operator, f"{path}.operator", F.COUNT_OPERATORS):
            return
        value = node.get("value")
        if operator == "between":
            self.pair(value, f"{path}.value", lambda v, p: self.number(v, p, minimum=minimum))
        else:
            self.number(value, f"{path}.value", minimum=minimum)

    def pair(self, value, path: str, check: Callable[[object, str], bool]) -> None:
        if not isinstance(value, list) or len(value) != 2:
            self.fail(path, "between needs a list of two values [low, high]")
            return
        if check(value[0], f"{path}[0]") and check(value[1], f"{path}[1]"):
            low, high = value
            if isinstance(low, str):
                low, high = parse_datetime(low), parse_datetime(high)
            if low > high:
                self.fail(path, "low must not be greater than high")

    def value_list(self, value, path: str, check: Callable[[object, str], bool]) -> None:
        if not isinstance(value, list) or not value:
            self.fail(path, "must be a non-empty list")
            return
        if len(value) > MAX_LIST:
            self.fail(path, f"has {len(value)} items; at most {MAX_LIST} are allowed")
            return
        for index, item in enumerate(value):
            if not check(item, f"{path}[{index}]"):
                return

    def scalar(self, value, path: str) -> bool:
        if isinstance(value, str):
            return self.string(value, path)
        if isinstance(value, bool):
            return True
        return self.number(value, path)

    def event_name(self, value, path: str) -> bool:
        if not isinstance(value, str) or not F.EVENT_NAME_RE.match(value):
            self.fail(path, "event must be an event name (1-200 characters, no control characters)")
            return False
        return True

    def filters(self, value, path: str) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(path, "where must be a list of property filters")
            return
        if len(value) > MAX_FILTERS:
            self.fail(path, f"at most {MAX_FILTERS} property filters are allowed")
            return
        for index, item in enumerate(value):
            self.property_filter(item, f"{path}[{index}]")

    def property_filter(self, node, path: str) -> None:
        if not isinstance(node, dict):
            self.fail(path, 'a filter is {"property": "category", "operator": "=", "value": "shoes"}')
            return
        self.keys(node, path, {"property", "operator", "value"})
        name = node.get("property")
        if not isinstance(name, str) or F.property_path(name) is None:
            self.fail(f"{path}.property", "property must be a property name such as category or product.id "
                                          "(letters, digits, _ and -, up to 4 levels) or an allowed context path "
                                          "such as context.campaign.name")
            return
        operator = node.get("operator")
        if self.choice(operator, f"{path}.operator", F.PROPERTY_OPERATORS):
            self.operand(operator, node.get("value"), f"{path}.value", F.JSON)

    def operand(self, operator: str, value, path: str, value_type: str) -> None:
        """Check the value an operator needs for a field of `value_type`."""
        if operator in ("is set", "is not set"):
            if value is not None:
                self.fail(path, f"{operator} takes no value")
            return
        if operator in ("in", "not in"):
            self.value_list(value, path, lambda v, p: self.typed(v, p, value_type))
            if isinstance(value, list) and len({_kind_of(item) for item in value}) > 1:
                self.fail(path, "all values of the list must be of one type (all text, all numbers or all booleans)")
        elif operator == "between":
            self.pair(value, path, lambda v, p: self.typed(v, p, value_type, ordered=True))
        elif operator in ("contains", "starts with"):
            self.string(value, path)
        elif operator in ("before", "after"):
            self.datetime_value(value, path)
        elif operator in ("<", "<=", ">", ">="):
            self.typed(value, path, value_type, ordered=True)
        else:
            self.typed(value, path, value_type)

    def typed(self, value, path: str, value_type: str, *, ordered: bool = False) -> bool:
        if value_type == F.STRING:
            return self.string(value, path)
        if value_type == F.NUMBER:
            return self.number(value, path)
        if value_type == F.BOOLEAN:
            if not isinstance(value, bool):
                self.fail(path, "must be true or false")
                return False
            return True
        if value_type == F.DATETIME:
            return self.datetime_value(value, path)
        if ordered:  # JSON: order comparisons need a number or a date
            if isinstance(value, str):
                return self.datetime_value(value, path)
            return self.number(value, path)
        return self.scalar(value, path)

    # -- nodes --------------------------------------------------------------------------------
    def node(self, node, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(path, f"conditions are nested more than {MAX_DEPTH} levels deep")
            return
        self.nodes += 1
        if self.nodes > MAX_NODES:
            if self.nodes == MAX_NODES + 1:
                self.fail(path, f"a definition may have at most {MAX_NODES} conditions")
            return
        if not isinstance(node, dict):
            self.fail(path, "a condition must be an object with a type")
            return
        kind = node.get("type")
        validator = NODE_VALIDATORS.get(kind) if isinstance(kind, str) else None
        if validator is None:
            self.choice(kind, f"{path}.type", tuple(NODE_VALIDATORS), what="condition type")
            return
        validator(self, node, path, depth)


def _group(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"conditions"})
    children = node.get("conditions")
    if not isinstance(children, list) or not children:
        v.fail(f"{path}.conditions", "must be a non-empty list of conditions")
        return
    for index, child in enumerate(children):
        v.node(child, f"{path}.conditions[{index}]", depth + 1)


def _not(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"condition"})
    if "condition" not in node:
        v.fail(path, "not needs a condition")
        return
    v.node(node["condition"], f"{path}.condition", depth + 1)


def _trait(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"field", "operator", "value", "unit"})
    name = node.get("field")
    trait = F.trait_field(name) if isinstance(name, str) else None
    if trait is None:
        v.fail(f"{path}.field", "unknown field; use a profile field (" + ", ".join(F.PROFILE_FIELDS)
               + "), a computed trait (computed.order_count, computed.r_score, ...) or traits.<key>")
        return
    operator = node.get("operator")
    if not v.choice(operator, f"{path}.operator", F.OPERATORS_BY_TYPE[trait.type]):
        return
    v.trait_dependency(name.removeprefix(F.TRAIT_PREFIX).removeprefix("computed."))
    if name.startswith("computed."):
        v.trait_dependency("computed")
    if operator in ("within last", "not within last"):
        v.amount_unit(node, path, max_days=MAX_WINDOW_DAYS * 10)
        v.analysis.is_time_based = True
        return
    if "unit" in node:
        v.fail(f"{path}.unit", "unit is only used with within last / not within last")
    v.operand(operator, node.get("value"), f"{path}.value", trait.type)


def _event(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"event", "where", "window", "count"})
    if v.event_name(node.get("event"), f"{path}.event"):
        v.analysis.event_names.add(node["event"])
    v.filters(node.get("where"), f"{path}.where")
    v.window(node.get("window"), f"{path}.window")
    v.comparison(node.get("count"), f"{path}.count")


def _event_time(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"event", "where", "occurrence", "operator", "value", "unit"})
    if v.event_name(node.get("event"), f"{path}.event"):
        v.analysis.event_names.add(node["event"])
    v.filters(node.get("where"), f"{path}.where")
    v.choice(node.get("occurrence"), f"{path}.occurrence", ("first", "last"), what="occurrence")
    operator = node.get("operator")
    if not v.choice(operator, f"{path}.operator", F.TIME_OPERATORS):
        return
    if operator in ("within last", "not within last"):
        v.amount_unit(node, path, max_days=MAX_WINDOW_DAYS)
        v.analysis.is_time_based = True
    else:
        v.datetime_value(node.get("value"), f"{path}.value")


def _step(v: _Validator, node, path: str) -> None:
    if not isinstance(node, dict):
        v.fail(path, 'a step is {"event": "added_to_cart", "where": [...]}')
        return
    v.keys(node, path, {"event", "where"})
    if v.event_name(node.get("event"), f"{path}.event"):
        v.analysis.event_names.add(node["event"])
    v.filters(node.get("where"), f"{path}.where")


def _sequence(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"first", "then", "absent", "within", "window"})
    _step(v, node.get("first"), f"{path}.first")
    _step(v, node.get("then"), f"{path}.then")
    if not isinstance(node.get("absent", False), bool):
        v.fail(f"{path}.absent", "must be true (then did NOT happen) or false (then happened)")
    within = node.get("within")
    if not isinstance(within, dict):
        v.fail(f"{path}.within", 'must be {"value": 10, "unit": "minutes"}')
    else:
        v.keys(within, f"{path}.within", {"value", "unit"})
        v.amount_unit(within, f"{path}.within", max_days=MAX_SEQUENCE_GAP_DAYS)
    v.window(node.get("window"), f"{path}.window")
    v.analysis.is_time_based = True


def _transaction(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"measure", "window", "category", "operator", "value"})
    v.analysis.uses_transactions = True
    measure = node.get("measure")
    if not v.choice(measure, f"{path}.measure", ("count", "sum", "average", "days_since_last"), what="measure"):
        return
    if measure == "days_since_last":
        if "window" in node:
            v.fail(f"{path}.window", "days_since_last takes no window")
        v.analysis.is_time_based = True
    else:
        v.window(node.get("window"), f"{path}.window")
    if "category" in node:
        v.value_list(node["category"], f"{path}.category", lambda value, p: v.string(value, p))
    v.comparison({"operator": node.get("operator"), "value": node.get("value")}, path)


def _context(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"field", "operator", "value"})
    name = node.get("field")
    if not v.choice(name, f"{path}.field", (*F.CONTEXT_FIELDS, "city_size"), what="context field"):
        return
    operator = node.get("operator")
    if not v.choice(operator, f"{path}.operator", F.CONTEXT_OPERATORS):
        return
    value = node.get("value")
    if name == "city_size":
        def check(item, p):
            return v.choice(item, p, F.CITY_SIZES, what="city size")
        v.trait_dependency("city")
        v.trait_dependency("country")
    else:
        def check(item, p):
            return v.string(item, p)
        v.trait_dependency(F.CONTEXT_FIELDS[name].column)
        if name in ("device_type", "os", "browser"):
            v.analysis.any_event = True  # technographics follow the latest event
    if operator in ("in", "not in"):
        v.value_list(value, f"{path}.value", check)
    else:
        check(value, f"{path}.value")


def _activity(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"hours", "weekdays", "event", "window", "count"})
    hours = node.get("hours")
    if isinstance(hours, str):
        v.choice(hours, f"{path}.hours", tuple(F.HOUR_BUCKETS), what="hour bucket")
    elif isinstance(hours, dict):
        v.keys(hours, f"{path}.hours", {"from", "to"})
        for key in ("from", "to"):
            v.number(hours.get(key), f"{path}.hours.{key}", integer=True, minimum=0, maximum=24)
    elif hours is not None:
        v.fail(f"{path}.hours", 'must be a bucket name (after_work, ...) or {"from": 17, "to": 22}')
    weekdays = node.get("weekdays")
    if weekdays is not None:
        v.value_list(weekdays, f"{path}.weekdays", lambda item, p: v.choice(item, p, F.WEEKDAYS, what="weekday"))
    if node.get("event") is not None:
        if v.event_name(node["event"], f"{path}.event"):
            v.analysis.event_names.add(node["event"])
    else:
        v.analysis.any_event = True
    if hours is None and weekdays is None:
        v.fail(path, "activity needs hours, weekdays or both")
    v.window(node.get("window"), f"{path}.window")
    v.comparison(node.get("count"), f"{path}.count")


def _segment(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"operator", "segment"})
    v.choice(node.get("operator"), f"{path}.operator", ("in", "not in"))
    key = node.get("segment")
    if not isinstance(key, str) or not F.KEY_RE.match(key):
        v.fail(f"{path}.segment", "must be a segment key")
        return
    v.analysis.segment_keys.add(key)


def _consent(v: _Validator, node: dict, path: str, depth: int) -> None:
    v.keys(node, path, {"purpose"})
    purpose = node.get("purpose")
    if not isinstance(purpose, str) or not F.KEY_RE.match(purpose):
        v.fail(f"{path}.purpose", "must be a purpose key such as personalization")
        return
    v.analysis.uses_consent = True
    v.analysis.purposes.add(purpose)


NODE_VALIDATORS: dict[str, Callable] = {
    "and": _group, "or": _group, "not": _not, "trait": _trait, "event": _event, "event_time": _event_time,
    "sequence": _sequence, "transaction": _transaction, "context": _context, "activity": _activity,
    "segment": _segment, "consent": _consent,
}


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "text"


def parse_datetime(value) -> datetime | None:
    """An aware datetime from an ISO date or date-time string (dates mean midnight UTC)."""
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def validate(definition) -> Analysis:
    """Check a definition; return what it reads, or raise DefinitionError listing every problem."""
    validator = _Validator()
    if not isinstance(definition, dict):
        raise DefinitionError([{"path": "definition", "message": 'must be an object {"version": 1, "root": {...}}'}])
    if len(orjson.dumps(definition)) > MAX_BYTES:
        raise DefinitionError([{"path": "definition", "message": f"is larger than {MAX_BYTES // 1024} KB"}])
    validator.keys(definition, "definition", {"version", "root"})
    if definition.get("version") != VERSION:
        validator.fail("definition.version", f"must be {VERSION}")
    if "root" not in definition:
        validator.fail("definition.root", "is missing")
    else:
        validator.node(definition["root"], "root", 1)
    if validator.errors:
        raise DefinitionError(validator.errors)
    return validator.analysis


def walk(node: dict):
    """Every node of a (valid) tree, depth first."""
    yield node
    for child in node.get("conditions", ()):
        yield from walk(child)
    if "condition" in node:
        yield from walk(node["condition"])
