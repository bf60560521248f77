"""A readable sentence for a (valid) definition: what the segment means, for people."""

from collections.abc import Callable

from segments.evaluation import fields as F

_OPERATOR_WORDS = {"=": "is", "!=": "is not", "<": "is less than", "<=": "is at most", ">": "is more than",
                   ">=": "is at least", "in": "is one of", "not in": "is none of", "contains": "contains",
                   "starts with": "starts with", "is set": "is set", "is not set": "is not set",
                   "before": "is before", "after": "is after", "between": "is between"}
_COUNT_WORDS = {"=": "exactly {} times", "!=": "other than {} times", "<": "fewer than {} times",
                "<=": "at most {} times", ">": "more than {} times", ">=": "at least {} times"}


def _value(value) -> str:
    if isinstance(value, list):
        shown = ", ".join(_value(item) for item in value[:5])
        return shown + (f" and {len(value) - 5} more" if len(value) > 5 else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"“{value}”"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _period(value, unit: str) -> str:
    unit_word = unit[:-1] if value == 1 else unit
    return f"{value} {unit_word}"


def _window(window: dict | None) -> str:
    if not window:
        return "ever"
    if "last" in window:
        return f"in the last {_period(window['last'], window['unit'])}"
    return f"between {window['from']} and {window['to']}"


def _count(count: dict) -> str:
    if count["operator"] == "between":
        return f"between {count['value'][0]} and {count['value'][1]} times"
    text = _COUNT_WORDS[count["operator"]].format(_value(count["value"]))
    return text.replace(" 1 times", " once")


def _filters(filters) -> str:
    if not filters:
        return ""
    parts = [f"{item['property']} {_comparison(item['operator'], item.get('value'))}" for item in filters]
    return " (where " + " and ".join(parts) + ")"


def _comparison(operator: str, value) -> str:
    if operator in ("is set", "is not set"):
        return _OPERATOR_WORDS[operator]
    if operator == "between":
        return f"is between {_value(value[0])} and {_value(value[1])}"
    return f"{_OPERATOR_WORDS[operator]} {_value(value)}"


def describe_group(node: dict, depth: int) -> str:
    joiner = " and " if node["type"] == "and" else " or "
    parts = [describe(child, depth + 1) for child in node["conditions"]]
    text = joiner.join(parts)
    return f"({text})" if depth > 0 and len(parts) > 1 else text


def describe_not(node: dict, depth: int) -> str:
    return f"not ({describe(node['condition'], depth + 1)})"


def describe_trait(node: dict, depth: int) -> str:
    field = F.trait_field(node["field"])
    label = field.label if field.type != F.JSON else f"trait {field.label}"
    if node["operator"] in ("within last", "not within last"):
        return f"{label} is {node['operator'].replace('last', 'the last')} {_period(node['value'], node['unit'])}"
    return f"{label} {_comparison(node['operator'], node.get('value'))}"


def describe_event(node: dict, depth: int) -> str:
    what = f"{node['event']}{_filters(node.get('where'))}"
    if node["count"] in ({"operator": "=", "value": 0}, {"operator": "<", "value": 1}):
        return f"did not do {what} {_window(node['window'])}"
    return f"did {what} {_count(node['count'])} {_window(node['window'])}"


def describe_event_time(node: dict, depth: int) -> str:
    what = f"{node['occurrence']} {node['event']}{_filters(node.get('where'))}"
    if node["operator"] in ("within last", "not within last"):
        return f"{what} was {node['operator'].replace('last', 'the last')} {_period(node['value'], node['unit'])}"
    return f"{what} was {node['operator']} {node['value']}"


def describe_sequence(node: dict, depth: int) -> str:
    gap = _period(node["within"]["value"], node["within"]["unit"])
    first = f"{node['first']['event']}{_filters(node['first'].get('where'))}"
    then = f"{node['then']['event']}{_filters(node['then'].get('where'))}"
    middle = f"then no {then}" if node.get("absent") else f"then {then}"
    return f"did {first} and {middle} within {gap} ({_window(node['window'])})"


def describe_transaction(node: dict, depth: int) -> str:
    category = f" in {_value(node['category'])}" if node.get("category") else ""
    comparison = _comparison(node["operator"], node["value"])
    if node["measure"] == "days_since_last":
        return f"days since last purchase{category} {comparison}"
    label = {"count": "number of purchases", "sum": "amount spent", "average": "average purchase"}[node["measure"]]
    return f"{label}{category} {_window(node.get('window'))} {comparison}"


def describe_context(node: dict, depth: int) -> str:
    label = "city size" if node["field"] == "city_size" else F.CONTEXT_FIELDS[node["field"]].label
    return f"{label} {_comparison(node['operator'], node['value'])}"


def describe_activity(node: dict, depth: int) -> str:
    hours = node.get("hours")
    when = []
    if isinstance(hours, str):
        start, end = F.HOUR_BUCKETS[hours]
        when.append(f"{hours.replace('_', ' ')} ({start}:00–{end}:00 local time)")
    elif hours:
        when.append(f"between {hours['from']}:00 and {hours['to']}:00 local time")
    if node.get("weekdays"):
        when.append("on " + ", ".join(node["weekdays"]))
    what = node.get("event") or "was active"
    verb = f"did {what}" if node.get("event") else what
    return f"{verb} {' '.join(when)} {_count(node['count'])} {_window(node['window'])}"


def describe_segment(node: dict, depth: int) -> str:
    return f"{'is' if node['operator'] == 'in' else 'is not'} in segment {node['segment']}"


def describe_consent(node: dict, depth: int) -> str:
    from consent import reference

    info = reference.purposes().get(node["purpose"])
    name = f"“{info.name}” ({info.key})" if info is not None else f"the unknown purpose {node['purpose']}"
    return f"has granted consent for {name}"


NODE_DESCRIBERS: dict[str, Callable[[dict, int], str]] = {
    "and": describe_group, "or": describe_group, "not": describe_not, "trait": describe_trait,
    "event": describe_event, "event_time": describe_event_time, "sequence": describe_sequence,
    "transaction": describe_transaction, "context": describe_context, "activity": describe_activity,
    "segment": describe_segment, "consent": describe_consent,
}


def describe(node: dict, depth: int = 0) -> str:
    return NODE_DESCRIBERS[node["type"]](node, depth)


def sentence(definition: dict) -> str:
    """“People whose country is “DE” and did product_viewed more than 3 times in the last 7 days.”"""
    return f"People who match: {describe(definition['root'])}."
