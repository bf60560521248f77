"""Bad definitions get a 400 naming the node and the problem; nothing a user types becomes SQL text."""

import pytest
from django.db import connection

from profiles.models import Profile
from segments.evaluation import DefinitionError, members_statement, validate
from segments.evaluation.definition import MAX_DEPTH, MAX_LIST, MAX_NODES
from segments.models import Segment
from tests.segment_helpers import NOW, World, definition, members

pytestmark = pytest.mark.django_db

COUNTRY = {"type": "trait", "field": "country", "operator": "=", "value": "DE"}


def errors_of(root) -> list[dict]:
    with pytest.raises(DefinitionError) as failure:
        validate(definition(root) if root is not None and "version" not in root else root)
    return failure.value.errors


def test_errors_name_the_node_and_what_is_wrong():
    tree = {"type": "and", "conditions": [COUNTRY, {"type": "trait", "field": "country", "operator": "LIKE",
                                                    "value": "D%"}]}
    assert errors_of(tree) == [{"path": "root.conditions[1].operator", "message":
                                "unknown operator 'LIKE'; allowed: =, !=, in, not in, contains, starts with, is set, "
                                "is not set"}]
    assert errors_of({"type": "event", "event": "x", "window": {"last": 7}, "count": {"operator": ">", "value": -1}}) == [
        {"path": "root.window.unit", "message": "unit is missing; allowed: minutes, hours, days, weeks"},
        {"path": "root.count.value", "message": "must be at least 0"}]
    assert errors_of({"version": 2, "root": COUNTRY}) == [{"path": "definition.version", "message": "must be 1"}]
    assert errors_of({"type": "teleport"})[0]["path"] == "root.type"


@pytest.mark.parametrize("field", ["country; DROP TABLE profiles_profile", "p.id) OR (1=1", "traits.a'b", "computed.x",
                                   "traits.a.b.c", "merged_into_id", "first_name"])
def test_unknown_or_malicious_field_names_are_refused(field):
    errors = errors_of({"type": "trait", "field": field, "operator": "=", "value": "x"})
    assert errors[0]["path"] == "root.field"
    assert errors[0]["message"].startswith("unknown field")


@pytest.mark.parametrize("prop", ["category') OR 1=1 --", "a b", "context.secret", "x.y.z.w.v", ""])
def test_malicious_property_paths_are_refused(prop):
    errors = errors_of({"type": "event", "event": "product_viewed", "window": {"last": 7, "unit": "days"},
                        "count": {"operator": ">", "value": 0},
                        "where": [{"property": prop, "operator": "=", "value": "x"}]})
    assert errors[0]["path"] == "root.where[0].property"


def test_limits_on_depth_nodes_lists_and_strings():
    deep = COUNTRY
    for _ in range(MAX_DEPTH):
        deep = {"type": "not", "condition": deep}
    assert any("nested more than" in e["message"] for e in errors_of(deep))
    wide = {"type": "or", "conditions": [COUNTRY] * MAX_NODES}
    assert errors_of(wide)[0]["message"] == f"a definition may have at most {MAX_NODES} conditions"
    huge = {"type": "trait", "field": "country", "operator": "in", "value": ["DE"] * (MAX_LIST + 1)}
    assert errors_of(huge) == [{"path": "root.value", "message": f"has {MAX_LIST + 1} items; at most {MAX_LIST} are allowed"}]
    long = {"type": "trait", "field": "country", "operator": "=", "value": "x" * 201}
    assert errors_of(long) == [{"path": "root.value", "message": "value is longer than 200 characters"}]
    mixed = {"type": "trait", "field": "traits.tier", "operator": "in", "value": ["gold", 3]}
    assert "one type" in errors_of(mixed)[0]["message"]
    assert errors_of({"type": "trait", "field": "age", "operator": ">", "value": "thirty"})[0]["message"] == "must be a number"
    assert errors_of({"type": "consent", "purpose": "x'; DROP TABLE consent_purpose; --"}) == [
        {"path": "root.purpose", "message": "must be a purpose key such as personalization"}]
    assert errors_of({"type": "consent", "purpose": "personalization", "operator": "granted"})[0]["message"] == (
        "unknown key(s) 'operator'; allowed: purpose")


def test_sql_metacharacters_in_values_are_data_not_sql():
    w = World()
    evil = "DE'; DROP TABLE profiles_profile; --"
    tricky = w.profile(country="DE", city=evil)
    root = {"type": "or", "conditions": [{"type": "trait", "field": "country", "operator": "=", "value": evil},
                                         {"type": "trait", "field": "city", "operator": "in", "value": [evil, "%"]}]}
    statement = members_statement(definition(root), now=NOW)
    text = statement.text()
    assert evil not in text and "DROP" not in text
    assert evil in statement.params.values()
    assert members(root) == {tricky}  # matched as a plain value
    assert Profile.objects.count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('profiles_profile') IS NOT NULL")
        assert cursor.fetchone()[0] is True


API_CASES = [
    ({"type": "trait", "field": "country); DELETE FROM segments_segment; --", "operator": "=", "value": "x"},
     "root.field"),
    ({"type": "trait", "field": "country", "operator": "= ANY(SELECT", "value": "x"}, "root.operator"),
    ({"type": "trait", "field": "country", "operator": "in", "value": ["x"] * 5000}, "root.value"),
    ({"type": "or", "conditions": [COUNTRY] * 100}, "root.conditions[39]"),
    ({"type": "event", "event": "x", "window": {"last": 100000, "unit": "weeks"}, "count": {"operator": ">", "value": 1}},
     "root.window"),
    ({"type": "segment", "operator": "in", "segment": "nope"}, "root"),
]


@pytest.mark.parametrize("root, path", API_CASES)
def test_the_api_answers_400_with_the_reason_and_creates_nothing(client, users, root, path):
    client.force_login(users["alice"])
    for url, body in (("/api/segments/preview/", {"definition": definition(root)}),
                      ("/api/segments/", {"key": "bad_one", "name": "Bad", "definition": definition(root)})):
        response = client.post(url, body, content_type="application/json")
        assert response.status_code == 400, response.content
        data = response.json()
        assert data["code"] == "invalid_definition"
        assert data["field"] == "definition"
        assert data["errors"][0]["path"] == path
        assert data["message"].startswith(path)
    assert Segment.objects.count() == 0


def test_a_deeply_nested_payload_is_refused_before_any_query(client, users, django_assert_max_num_queries):
    client.force_login(users["alice"])
    deep = COUNTRY
    for _ in range(200):
        deep = {"type": "not", "condition": deep}
    with django_assert_max_num_queries(6):  # session, user, groups: no segment query
        response = client.post("/api/segments/preview/", {"definition": definition(deep)},
                               content_type="application/json")
    assert response.status_code == 400
    assert "nested more than" in response.json()["message"]


def test_non_json_and_wrong_shapes_are_400(client, users):
    client.force_login(users["alice"])
    response = client.post("/api/segments/preview/", "not json", content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) >= {"code", "message"}
    response = client.post("/api/segments/preview/", {"definition": ["a list"]}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"path": "definition", "message": 'must be an object {"version": 1, "root": {...}}'}]


def test_segment_conditions_that_would_form_a_cycle_are_refused(client, users):
    client.force_login(users["alice"])
    json = {"content_type": "application/json"}
    uses = lambda key: definition({"type": "segment", "operator": "in", "segment": key})  # noqa: E731
    assert client.post("/api/segments/", {"key": "base", "name": "Base", "definition": definition(COUNTRY)},
                       **json).status_code == 201
    assert client.post("/api/segments/", {"key": "middle", "name": "Middle", "definition": uses("base")},
                       **json).status_code == 201
    assert client.post("/api/segments/", {"key": "top", "name": "Top", "definition": uses("middle")},
                       **json).status_code == 201
    cycle = client.patch("/api/segments/base/", {"definition": uses("top")}, **json)
    assert cycle.status_code == 400
    assert cycle.json()["errors"] == [
        {"path": "root", "message": "this creates a cycle: a segment used here depends on this one"}]
    itself = client.patch("/api/segments/base/", {"definition": uses("base")}, **json)
    assert itself.json()["errors"] == [{"path": "root", "message": "a segment cannot refer to itself"}]
    assert Segment.objects.get(key="base").definition == definition(COUNTRY)
    archived = client.delete("/api/segments/middle/")
    assert archived.status_code == 409 and archived.json()["code"] == "segment_in_use"


def test_create_read_key_command_prints_a_key_once(db, capsys):
    from django.core.management import CommandError, call_command

    from cdp import apikeys
    from profiles.models import Source, SourceKey

    Source.objects.create(name="Web")
    call_command("create_read_key", source="Web")
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert raw.startswith("rk_")
    assert apikeys.key_resolve(raw, kind=SourceKey.Kind.READ).source_id == Source.objects.get(name="Web").pk
    with pytest.raises(CommandError, match="No active source named 'Nope'. Sources: Web"):
        call_command("create_read_key", source="Nope")
