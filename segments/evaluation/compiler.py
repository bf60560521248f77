"""Compile a validated condition tree into SQL composed with psycopg.sql.

Every node type is one function `compile_<type>(compiler, node, positive) -> sql.Composable`
returning a boolean expression over the profile row `p` (and LEFT JOINed per-profile aggregates
it registers). Values are always bound parameters (`compiler.param(value)` returns a named
placeholder); identifiers come from the allow-lists in fields.py. A node may also register a
*timer*: an expression giving the next moment at which its answer can change by time alone
(used for next_change_at).

Three-valued logic: under positive polarity (not inside a NOT) a NULL behaves like false, so a
leaf may stay strict (`j1.n > 3`), which also lets PostgreSQL turn the LEFT JOIN into an inner
join; inside a NOT every leaf is made two-valued with coalesce, so NOT means "the complement".

The same compiler runs the full recompute (all profiles), the real-time check (`profile_ids`
given: every aggregate is restricted to those ids and uses the per-profile indexes) and the
preview; see queries.py for the statements built around it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from uuid import UUID

from django.db import connection
from psycopg import sql

from consent.enforcement import consent_condition
from segments.evaluation import fields as F
from segments.evaluation.definition import DefinitionError, parse_datetime
from segments.purposes import named

WEEKDAY_NUMBERS = {name: index + 1 for index, name in enumerate(F.WEEKDAYS)}  # ISO: Monday = 1

_COMPARATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class Part:
    """A compiled node: its boolean expression and when its answer can next change by time alone
    (None: never)."""

    predicate: sql.Composable
    timer: sql.Composable | None = None
    # False when time alone can only take this node from true to false (a sliding count that
    # must reach a threshold): then a profile for which it is false now needs no timer.
    may_become_true: bool = True
    # For an AND: children a profile must satisfy to be a member or to have a timer at all;
    # the evaluation query filters on them early (join reduction, filter push-down).
    required: list | None = None
    # True when the expression reads only the profile row (`p`), no aggregate; for an AND, the
    # required children that do (the real-time check narrows its ids with them first).
    profile_only: bool = False
    required_profile: list | None = None


def uuid_array(ids) -> str:
    """Profile ids as one PostgreSQL array literal, bound as a single text parameter with a
    `::uuid[]` cast. Django's client-side binding quotes a Python list element by element (a
    regular expression per uuid), once per placeholder: that had cost a real-time batch of 500
    profiles 150 ms of its 480, more than the restricted queries' own planning."""
    return "{" + ",".join(str(value) for value in ids) + "}"


class Compiler:
    def __init__(self, *, now: datetime, profile_ids: list[UUID] | None = None,
                 segment_ids: dict[str, int] | None = None, prefix: str = "p",
                 candidates: sql.Composable | None = None):
        """`candidates` (real-time check only): a condition on the profile row `p` that every
        output row satisfies; aggregates then read only the ids that pass it. `prefix` names
        the parameters, so a second compilation can use the first one's condition."""
        self.now = now
        self.prefix = prefix
        self.candidates = candidates
        self.params: dict[str, object] = {"now": now}
        self.restricted = profile_ids is not None
        if self.restricted:
            self.params["ids"] = uuid_array(profile_ids)
        self.segment_ids = segment_ids or {}
        self.joins: list[sql.Composable] = []
        self._leaf_timers: list[sql.Composable] = []
        self._leaf_may_become_true = True
        self._leaf_profile_only = False
        self.uses_computed = False

    # -- helpers --------------------------------------------------------------------------------
    def param(self, value) -> sql.Placeholder:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return sql.Placeholder(name)

    @property
    def now_sql(self) -> sql.Placeholder:
        return sql.Placeholder("now")

    def restrict(self, column: sql.Composable) -> sql.Composable:
        """`AND <column> = ANY(ids)` in the real-time check, nothing in a full recompute. With
        `candidates`, only the ids whose profile row passes them (an InitPlan evaluated once, so
        the per-profile indexes still serve the aggregate)."""
        if not self.restricted:
            return sql.SQL("")
        if self.candidates is None:
            return sql.SQL(" AND {} = ANY({}::uuid[])").format(column, sql.Placeholder("ids"))
        # Index: profiles_profile_pkey for the ids, then the aggregate's per-profile index.
        return sql.SQL(" AND {} = ANY(ARRAY(SELECT p.id FROM profiles_profile p WHERE p.id = ANY({}::uuid[]) "
                       "AND p.merged_into_id IS NULL AND {}))").format(column, sql.Placeholder("ids"), self.candidates)

    def join(self, subquery: sql.Composable) -> sql.Identifier:
        """LEFT JOIN a per-profile aggregate (it must output `profile_id`); return its alias."""
        alias = sql.Identifier(f"j{len(self.joins) + 1}")
        self.joins.append(sql.SQL(" LEFT JOIN ({}) {} ON {}.profile_id = p.id").format(subquery, alias, alias))
        return alias

    def timer(self, expression: sql.Composable) -> None:
        """Register a moment at which the leaf being compiled can change its answer."""
        self._leaf_timers.append(expression)

    def compile(self, node: dict, positive: bool = True) -> sql.Composable:
        return self.part(node, positive).predicate

    def part(self, node: dict, positive: bool = True) -> Part:
        saved = self._leaf_timers, self._leaf_may_become_true, self._leaf_profile_only
        self._leaf_timers, self._leaf_may_become_true, self._leaf_profile_only = [], True, False
        try:
            result = NODE_COMPILERS[node["type"]](self, node, positive)
            if isinstance(result, Part):
                return result
            return Part(result, _least(self._leaf_timers), self._leaf_may_become_true or not self._leaf_timers,
                        profile_only=self._leaf_profile_only)
        finally:
            self._leaf_timers, self._leaf_may_become_true, self._leaf_profile_only = saved

    def profile_only(self) -> None:
        """The leaf being compiled reads only the profile row."""
        self._leaf_profile_only = True

    def only_turns_false(self) -> None:
        """The leaf being compiled can change by time only from true to false."""
        self._leaf_may_become_true = False

    def window(self, window: dict | None, column: sql.Composable) -> tuple[sql.Composable, timedelta | None]:
        """(condition on `column`, length of a sliding window or None for fixed dates).

        Sliding windows are open at the start: an event exactly N ago is out, so the moment it
        leaves is exactly `timestamp + N` (the timer), never a moment too early.
        """
        if window is None:
            return sql.SQL("{} <= {}").format(column, self.now_sql), None
        if "last" in window:
            length = F.UNITS[window["unit"]] * window["last"]
            return (sql.SQL("{} > {} AND {} <= {}").format(column, self.param(self.now - length), column,
                                                           self.now_sql), length)
        start, end = parse_datetime(window["from"]), parse_datetime(window["to"])
        return sql.SQL("{} >= {} AND {} < {}").format(column, self.param(start), column, self.param(end)), None


def _least(timers: list[sql.Composable]) -> sql.Composable | None:
    if not timers:
        return None
    return timers[0] if len(timers) == 1 else sql.SQL("LEAST({})").format(sql.SQL(", ").join(timers))


def _greatest(timers: list[sql.Composable]) -> sql.Composable:
    return timers[0] if len(timers) == 1 else sql.SQL("GREATEST({})").format(sql.SQL(", ").join(timers))


def _two_valued(expression: sql.Composable, positive: bool) -> sql.Composable:
    return expression if positive else sql.SQL("coalesce({}, false)").format(expression)


def _compare(c: Compiler, left: sql.Composable, operator: str, value) -> sql.Composable:
    if operator == "between":
        return sql.SQL("({} BETWEEN {} AND {})").format(left, c.param(value[0]), c.param(value[1]))
    return sql.SQL("({} {} {})").format(left, sql.SQL(_COMPARATORS[operator]), c.param(value))


def _satisfied_by_zero(operator: str, value) -> bool:
    if operator == "between":
        return value[0] <= 0 <= value[1]
    return {"=": 0 == value, "!=": 0 != value, "<": 0 < value, "<=": 0 <= value, ">": 0 > value,
            ">=": 0 >= value}[operator]


def _count_condition(c: Compiler, column: sql.Composable, comparison: dict, positive: bool) -> sql.Composable:
    """A comparison on an aggregate that is NULL (no rows) for profiles without matches."""
    operator, value = comparison["operator"], comparison["value"]
    if _satisfied_by_zero(operator, value):
        return _compare(c, sql.SQL("coalesce({}, 0)").format(column), operator, value)
    return _two_valued(_compare(c, column, operator, value), positive)


def _window_timer(c: Compiler, alias: sql.Identifier, comparison: dict, length: timedelta | None) -> None:
    """Counts in a sliding window only fall as time passes: the answer can change when the oldest
    event in the window leaves it. For <, <=, >, >= it changes only if the answer at zero
    differs from the answer now, so only those profiles get a timer."""
    if length is None:
        return
    operator, value = comparison["operator"], comparison["value"]
    expiry = sql.SQL("{}.first_at + {}").format(alias, c.param(length))
    if operator in ("<", "<=", ">", ">="):
        now_answer = _compare(c, sql.SQL("coalesce({}.n, 0)").format(alias), operator, value)
        guard = now_answer if not _satisfied_by_zero(operator, value) else sql.SQL("NOT {}").format(now_answer)
        c.timer(sql.SQL("CASE WHEN {} THEN {} END").format(guard, expiry))
        if not _satisfied_by_zero(operator, value):
            c.only_turns_false()
    else:
        c.timer(expiry)


# -- JSON values (traits, event properties, context) -------------------------------------------
def _json_number(expression: sql.Composable) -> sql.Composable:
    """A jsonb value as numeric, or NULL when it is not a number (never a cast error)."""
    return sql.SQL("(CASE WHEN jsonb_typeof({0}) = 'number' THEN ({0} #>> '{{}}')::numeric "
                   "WHEN jsonb_typeof({0}) = 'string' AND ({0} #>> '{{}}') ~ '^-?[0-9]{{1,15}}(\\.[0-9]{{1,10}})?$' "
                   "THEN ({0} #>> '{{}}')::numeric END)").format(expression)


def _json_timestamp(expression: sql.Composable) -> sql.Composable:
    """A jsonb ISO date(-time) string as timestamptz, or NULL (never a cast error)."""
    return sql.SQL("(CASE WHEN jsonb_typeof({0}) = 'string' AND ({0} #>> '{{}}') ~ "
                   "'^[0-9]{{4}}-[0-1][0-9]-[0-3][0-9]([T ][0-2][0-9]:[0-5][0-9](:[0-5][0-9](\\.[0-9]{{1,6}})?)?"
                   "(Z|[+-][0-2][0-9](:?[0-5][0-9])?)?)?$' "
                   "THEN segments_try_timestamptz({0} #>> '{{}}') END)").format(expression)


def _json_condition(c: Compiler, json_value: sql.Composable, operator: str, value) -> sql.Composable:
    """A condition on a jsonb value; the type of `value` picks text, numeric or boolean compare."""
    text = sql.SQL("({} #>> '{{}}')").format(json_value)
    if operator == "is set":
        return sql.SQL("(coalesce(jsonb_typeof({}), 'null') NOT IN ('null'))").format(json_value)
    if operator == "is not set":
        return sql.SQL("(coalesce(jsonb_typeof({}), 'null') = 'null')").format(json_value)
    if operator in ("contains", "starts with"):
        return _text_condition(c, text, operator, value)
    if operator in ("before", "after"):
        return _compare(c, _json_timestamp(json_value), "<" if operator == "before" else ">",
                        parse_datetime(value))
    sample = value[0] if isinstance(value, list) else value
    if isinstance(sample, bool):
        if operator in ("in", "not in"):
            found = sql.SQL("({} = ANY({}))").format(text, c.param(["true" if v else "false" for v in value]))
            return found if operator == "in" else sql.SQL("(NOT {})").format(found)
        return sql.SQL("(jsonb_typeof({}) = 'boolean' AND {} {} {})").format(
            json_value, text, sql.SQL(_COMPARATORS[operator]), c.param("true" if value else "false"))
    if isinstance(sample, int | float):
        number = _json_number(json_value)
        if operator in ("in", "not in"):
            found = sql.SQL("({} = ANY({}::numeric[]))").format(number, c.param(list(value)))
            return found if operator == "in" else sql.SQL("(NOT {})").format(found)
        return _compare(c, number, operator, value)
    if operator in ("<", "<=", ">", ">=") or (operator == "between" and isinstance(sample, str)):
        bound = [parse_datetime(v) for v in value] if operator == "between" else parse_datetime(value)
        return _compare(c, _json_timestamp(json_value), operator, bound)
    return _text_condition(c, text, operator, value)


def _text_condition(c: Compiler, column: sql.Composable, operator: str, value) -> sql.Composable:
    if operator == "in":
        return sql.SQL("({} = ANY({}::text[]))").format(column, c.param([str(v) for v in value]))
    if operator == "not in":
        return sql.SQL("({} <> ALL({}::text[]))").format(column, c.param([str(v) for v in value]))
    if operator == "contains":
        return sql.SQL("(strpos(lower({}), lower({})) > 0)").format(column, c.param(value))
    if operator == "starts with":
        return sql.SQL("starts_with(lower({}), lower({}))").format(column, c.param(value))
    if operator == "is set":
        return sql.SQL("(coalesce({}, '') <> '')").format(column)
    if operator == "is not set":
        return sql.SQL("(coalesce({}, '') = '')").format(column)
    return _compare(c, column, operator, str(value))


def _event_filters(c: Compiler, alias: str, filters: list[dict] | None) -> sql.Composable:
    parts = []
    for item in filters or ():
        column, path = F.property_path(item["property"])
        json_value = sql.SQL("({}.{} #> {}::text[])").format(sql.Identifier(alias), sql.Identifier(column),
                                                              c.param(path))
        parts.append(_json_condition(c, json_value, item["operator"], item.get("value")))
    return sql.SQL("").join(sql.SQL(" AND {}").format(part) for part in parts)


# -- node compilers ---------------------------------------------------------------------------
def compile_group(c: Compiler, node: dict, positive: bool) -> Part:
    """AND / OR, and when the group's answer can change by time: a true AND turns false as soon as
    one child does; a false AND turns true only once every false child has (never, if one of
    them cannot change by time). OR is the mirror image. So only profiles whose overall answer
    can move get a timer."""
    is_and = node["type"] == "and"
    parts = [c.part(child, positive) for child in node["conditions"]]
    joiner = sql.SQL(" AND ") if is_and else sql.SQL(" OR ")
    predicate = sql.SQL("({})").format(joiner.join(part.predicate for part in parts))
    needed = [part for part in parts if part.timer is None or not part.may_become_true] if is_and else []
    required = [part.predicate for part in needed]
    required_profile = [part.predicate for part in needed if part.profile_only]
    profile_only = all(part.profile_only for part in parts)
    if not any(part.timer is not None for part in parts):
        return Part(predicate, required=required, profile_only=profile_only, required_profile=required_profile)
    truth = [sql.SQL("coalesce({}, false)").format(part.predicate) for part in parts]
    timed = [(value, part.timer) for value, part in zip(truth, parts, strict=True) if part.timer is not None]
    # The side on which any single child's change flips the group: all true for AND, all false for OR.
    any_flip = _least([timer for _, timer in timed])
    # The other side: every child that disagrees with the group's target must be able to flip.
    blocking, moments = [], []
    for value, part in zip(truth, parts, strict=True):
        disagrees = sql.SQL("NOT {}").format(value) if is_and else value
        if part.timer is None:
            blocking.append(sql.SQL("NOT ({})").format(disagrees))
        else:
            blocking.append(sql.SQL("(NOT ({}) OR {} IS NOT NULL)").format(disagrees, part.timer))
            moments.append(sql.SQL("CASE WHEN {} THEN {} END").format(disagrees, part.timer))
    all_flip = sql.SQL("CASE WHEN {} THEN {} END").format(sql.SQL(" AND ").join(blocking), _greatest(moments))
    unanimous = sql.SQL(" AND ").join(truth) if is_and else sql.SQL("NOT ({})").format(sql.SQL(" OR ").join(truth))
    return Part(predicate, sql.SQL("(CASE WHEN {} THEN {} ELSE {} END)").format(unanimous, any_flip, all_flip),
                may_become_true=any(part.may_become_true for part in parts) if is_and else True, required=required,
                profile_only=profile_only, required_profile=required_profile)


def compile_not(c: Compiler, node: dict, positive: bool) -> Part:
    part = c.part(node["condition"], False)
    return Part(sql.SQL("(NOT {})").format(part.predicate), part.timer, profile_only=part.profile_only)


def compile_trait(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    field = F.trait_field(node["field"])
    if field.table == "c":
        c.uses_computed = True
    else:
        c.profile_only()
    operator, value = node["operator"], node.get("value")
    column = sql.SQL("{}.{}").format(sql.Identifier(field.table), sql.Identifier(field.column))
    if field.type == F.JSON:
        json_value = sql.SQL("(p.traits -> {})").format(c.param(field.label))
        if operator in ("within last", "not within last"):
            return _datetime_within(c, _json_timestamp(json_value), node, positive)
        return _two_valued(_json_condition(c, json_value, operator, value), positive)
    if field.type == F.DATETIME:
        if operator in ("within last", "not within last"):
            return _datetime_within(c, column, node, positive)
        if operator in ("is set", "is not set"):
            return sql.SQL("({} IS {} NULL)").format(column, sql.SQL("NOT" if operator == "is set" else ""))
        if operator == "between":
            return _two_valued(_compare(c, column, "between", [parse_datetime(v) for v in value]), positive)
        return _two_valued(_compare(c, column, "<" if operator == "before" else ">", parse_datetime(value)),
                           positive)
    if field.type == F.NUMBER:
        if operator in ("is set", "is not set"):
            return sql.SQL("({} IS {} NULL)").format(column, sql.SQL("NOT" if operator == "is set" else ""))
        if operator in ("in", "not in"):
            found = sql.SQL("({} = ANY({}::numeric[]))").format(column, c.param(list(value)))
            return _two_valued(found if operator == "in" else sql.SQL("(NOT {})").format(found), positive)
        return _two_valued(_compare(c, column, operator, value), positive)
    return _two_valued(_text_condition(c, column, operator, value), positive)


def _datetime_within(c: Compiler, column: sql.Composable, node: dict, positive: bool) -> sql.Composable:
    """`column` within (or not within) the last N units; the answer flips at column + N."""
    length = F.UNITS[node["unit"]] * node["value"]
    start = c.param(c.now - length)
    c.timer(sql.SQL("CASE WHEN {} > {} THEN {} + {} END").format(column, start, column, c.param(length)))
    inside = sql.SQL("({} > {} AND {} <= {})").format(column, start, column, c.now_sql)
    outside = sql.SQL("({} <= {})").format(column, start)
    return _two_valued(inside if node["operator"] == "within last" else outside, positive)


def compile_event(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: profiles_event_name_ts (name, timestamp) in a full recompute; in the real-time check
    # profiles_event_profile_name_ts (profile_id, name, timestamp). Partitions outside the window
    # are pruned at execution (the bounds are parameters).
    window_sql, length = c.window(node["window"], sql.SQL("e.timestamp"))
    alias = c.join(sql.SQL(
        "SELECT e.profile_id, count(*) AS n, min(e.timestamp) AS first_at FROM profiles_event e "
        "WHERE e.name = {} AND {} AND e.profile_id IS NOT NULL{}{} GROUP BY e.profile_id"
    ).format(c.param(node["event"]), window_sql, c.restrict(sql.SQL("e.profile_id")),
             _event_filters(c, "e", node.get("where"))))
    _window_timer(c, alias, node["count"], length)
    return _count_condition(c, sql.SQL("{}.n").format(alias), node["count"], positive)


def compile_event_time(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: as compile_event. "last within last N" reads the window only; the other forms need
    # the first or last occurrence ever.
    operator = node["operator"]
    occurrence = "first_at" if node["occurrence"] == "first" else "last_at"
    length = F.UNITS[node["unit"]] * node["value"] if operator in ("within last", "not within last") else None
    bounded = node["occurrence"] == "last" and operator == "within last"
    window_sql = (sql.SQL("e.timestamp > {} AND e.timestamp <= {}").format(c.param(c.now - length), c.now_sql)
                  if bounded else sql.SQL("e.timestamp <= {}").format(c.now_sql))
    alias = c.join(sql.SQL(
        "SELECT e.profile_id, min(e.timestamp) AS first_at, max(e.timestamp) AS last_at FROM profiles_event e "
        "WHERE e.name = {} AND {} AND e.profile_id IS NOT NULL{}{} GROUP BY e.profile_id"
    ).format(c.param(node["event"]), window_sql, c.restrict(sql.SQL("e.profile_id")),
             _event_filters(c, "e", node.get("where"))))
    column = sql.SQL("{}.{}").format(alias, sql.Identifier(occurrence))
    if length is not None:
        return _datetime_within(c, column, {"operator": operator, "value": node["value"], "unit": node["unit"]},
                                positive)
    return _two_valued(_compare(c, column, "<" if operator == "before" else ">", parse_datetime(node["value"])),
                       positive)


def compile_sequence(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: profiles_event_name_ts for the first steps in the window (profile_name_ts when
    # restricted); each step's follow-up is one probe of profiles_event_profile_name_ts.
    gap = F.UNITS[node["within"]["unit"]] * node["within"]["value"]
    gap_param = c.param(gap)
    window_sql, length = c.window(node["window"], sql.SQL("a.timestamp"))
    follow_up = sql.SQL(
        "EXISTS (SELECT 1 FROM profiles_event b WHERE b.profile_id = a.profile_id AND b.name = {} "
        "AND b.timestamp > a.timestamp AND b.timestamp <= a.timestamp + {}{})"
    ).format(c.param(node["then"]["event"]), gap_param, _event_filters(c, "b", node["then"].get("where")))
    if node.get("absent", False):
        # Matched once the gap has fully passed without the follow-up; until then it is pending
        # and becomes true at a.timestamp + gap unless the follow-up arrives (the timer).
        matched = sql.SQL("a.timestamp + {} <= {} AND NOT {}").format(gap_param, c.now_sql, follow_up)
        pending = sql.SQL("min(a.timestamp + {}) FILTER (WHERE a.timestamp + {} > {})").format(
            gap_param, gap_param, c.now_sql)
    else:
        matched = follow_up
        pending = sql.SQL("NULL::timestamptz")
    alias = c.join(sql.SQL(
        "SELECT a.profile_id, bool_or({}) AS matched, {} AS pending_at, min(a.timestamp) AS first_at "
        "FROM profiles_event a WHERE a.name = {} AND {} AND a.profile_id IS NOT NULL{}{} GROUP BY a.profile_id"
    ).format(matched, pending, c.param(node["first"]["event"]), window_sql, c.restrict(sql.SQL("a.profile_id")),
             _event_filters(c, "a", node["first"].get("where"))))
    c.timer(sql.SQL("{}.pending_at").format(alias))
    if length is not None:
        c.timer(sql.SQL("{}.first_at + {}").format(alias, c.param(length)))
    return _two_valued(sql.SQL("{}.matched").format(alias), positive)


def compile_transaction(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: transaction_ts_idx (timestamp) in a full recompute, transaction_profile_ts_idx
    # (profile_id, timestamp) when restricted; categories probe transactionitem by transaction
    # (its foreign-key index).
    measure = node["measure"]
    category = sql.SQL("")
    if node.get("category"):
        category = sql.SQL(" AND EXISTS (SELECT 1 FROM profiles_transactionitem i WHERE i.transaction_id = t.id "
                           "AND i.category = ANY({}::text[]))").format(c.param(node["category"]))
    window_sql, length = c.window(node.get("window"), sql.SQL("t.timestamp"))
    alias = c.join(sql.SQL(
        "SELECT t.profile_id, count(*) AS n, sum(t.amount) AS total, avg(t.amount) AS average, "
        "min(t.timestamp) AS first_at, max(t.timestamp) AS last_at FROM profiles_transaction t "
        "WHERE {} AND t.profile_id IS NOT NULL{}{} GROUP BY t.profile_id"
    ).format(window_sql, c.restrict(sql.SQL("t.profile_id")), category))
    comparison = {"operator": node["operator"], "value": node["value"]}
    if measure == "days_since_last":
        days = sql.SQL("floor(extract(epoch FROM ({} - {}.last_at)) / 86400)").format(c.now_sql, alias)
        thresholds = comparison["value"] if isinstance(comparison["value"], list) else [comparison["value"]]
        for threshold in thresholds:  # whole days since: the answer can flip at last + k or k+1 days
            for offset in (threshold, threshold + 1):
                moment = sql.SQL("{}.last_at + {}").format(alias, c.param(timedelta(days=offset)))
                c.timer(sql.SQL("CASE WHEN {} > {} THEN {} END").format(moment, c.now_sql, moment))
        return _two_valued(_compare(c, days, comparison["operator"], comparison["value"]), positive)
    column = {"count": "n", "sum": "total", "average": "average"}[measure]
    if measure == "count":
        _window_timer(c, alias, comparison, length)
    else:  # sums and averages need not move one way (refunds): any lapse can change them
        _window_timer(c, alias, {"operator": "!=", "value": -1}, length)
    if measure == "average":
        return _two_valued(_compare(c, sql.SQL("{}.average").format(alias), comparison["operator"],
                                    comparison["value"]), positive)
    return _count_condition(c, sql.SQL("{}.{}").format(alias, sql.Identifier(column)), comparison, positive)


def compile_context(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    c.profile_only()
    operator, value = node["operator"], node["value"]
    if node["field"] == "city_size":
        wanted = {value} if operator in ("=", "!=") else set(value)
        if operator in ("!=", "not in"):
            wanted = set(F.CITY_SIZES) - wanted
        keys = sorted({f"{country}:{city}" for size in wanted for country, city in zip(*F.city_sizes()[size],
                                                                                         strict=True)})
        # Unknown cities have no size: they match neither urban nor rural.
        return sql.SQL("((p.country || ':' || p.city) = ANY({}::text[]))").format(c.param(keys))
    column = sql.SQL("p.{}").format(sql.Identifier(F.CONTEXT_FIELDS[node["field"]].column))
    return _two_valued(_text_condition(c, column, operator, value), positive)


@lru_cache(maxsize=1)
def _timezone_names() -> tuple[str, ...]:
    """Time zone names PostgreSQL knows (an unknown name in event context must not error)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_timezone_names")
        return tuple(sorted(row[0] for row in cursor.fetchall()))


def compile_activity(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: profiles_event_name_ts when an event is named, else the window's partitions (BRIN
    # profiles_event_ts_brin); restricted: profiles_event_profile_name_ts.
    zone = sql.SQL("CASE WHEN e.context ->> 'timezone' = ANY({}::text[]) THEN e.context ->> 'timezone' "
                   "ELSE 'UTC' END").format(c.param(list(_timezone_names())))
    local = sql.SQL("(e.timestamp AT TIME ZONE {})").format(zone)
    parts = []
    hours = node.get("hours")
    if hours is not None:
        start, end = F.HOUR_BUCKETS[hours] if isinstance(hours, str) else (hours["from"], hours["to"])
        hour = sql.SQL("extract(hour FROM {})").format(local)
        if start <= end:
            parts.append(sql.SQL("{} >= {} AND {} < {}").format(hour, c.param(start), hour, c.param(end)))
        else:  # wraps past midnight, e.g. 22 -> 6
            parts.append(sql.SQL("({} >= {} OR {} < {})").format(hour, c.param(start), hour, c.param(end)))
    if node.get("weekdays"):
        days = sorted({WEEKDAY_NUMBERS[day] for day in node["weekdays"]})
        parts.append(sql.SQL("extract(isodow FROM {})::int = ANY({}::int[])").format(local, c.param(days)))
    window_sql, length = c.window(node["window"], sql.SQL("e.timestamp"))
    name = sql.SQL(" AND e.name = {}").format(c.param(node["event"])) if node.get("event") else sql.SQL("")
    alias = c.join(sql.SQL(
        "SELECT e.profile_id, count(*) AS n, min(e.timestamp) AS first_at FROM profiles_event e "
        "WHERE {}{} AND e.profile_id IS NOT NULL AND e.type IN ('track', 'page', 'screen'){} AND {} "
        "GROUP BY e.profile_id"
    ).format(window_sql, name, c.restrict(sql.SQL("e.profile_id")), sql.SQL(" AND ").join(parts)))
    _window_timer(c, alias, node["count"], length)
    return _count_condition(c, sql.SQL("{}.n").format(alias), node["count"], positive)


def compile_segment(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: membership_open_uniq (segment_id, profile_id) partial; a hashed subplan, so it
    # stays one pass even under OR / NOT.
    c.profile_only()
    segment_id = c.segment_ids.get(node["segment"])
    if segment_id is None:
        raise DefinitionError([{"path": "segment", "message": f"unknown segment {node['segment']!r}"}])
    found = sql.SQL(
        "p.id IN (SELECT m.profile_id FROM segments_membership m JOIN segments_segment s ON s.id = m.segment_id "
        "WHERE m.segment_id = {} AND m.version_from <= s.membership_version "
        "AND (m.version_to IS NULL OR m.version_to > s.membership_version){})"
    ).format(c.param(segment_id), c.restrict(sql.SQL("m.profile_id")))
    return found if node["operator"] == "in" else sql.SQL("(NOT {})").format(found)


def compile_consent(c: Compiler, node: dict, positive: bool) -> sql.Composable:
    # Index: profile_consent_purpose_idx (purpose_id, profile_id) WHERE granted, one probe per
    # profile. consent.enforcement writes the condition (an unknown or inactive purpose compiles
    # to FALSE: fail closed); its positional parameters become the compiler's named ones.
    c.profile_only()
    condition = consent_condition(profile_column=sql.Identifier("p", "id"), purposes=[node["purpose"]])
    return named(condition, placeholder=c.param)


NODE_COMPILERS: dict[str, Callable[[Compiler, dict, bool], sql.Composable | Part]] = {
    "and": compile_group, "or": compile_group, "not": compile_not, "trait": compile_trait, "event": compile_event,
    "event_time": compile_event_time, "sequence": compile_sequence, "transaction": compile_transaction,
    "context": compile_context, "activity": compile_activity, "segment": compile_segment,
    "consent": compile_consent,
}
