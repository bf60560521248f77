"""Shared pieces in cdp/: the CSV writer every export uses, and per-object sharing."""

import csv
import io
from decimal import Decimal

import pytest
import rules
from django.contrib.auth.models import Group

from cdp.csvexport import csv_cell, csv_response, csv_text
from cdp.sharing import object_permitted, object_share, object_unshare, objects_visible_to
from segments.models import Segment


@pytest.mark.parametrize("value, expected", [
    ("=HYPERLINK(\"http://evil\")", "'=HYPERLINK(\"http://evil\")"),
    ("+1+2", "'+1+2"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tindent", "'\tindent"),
    ("\rreturn", "'\rreturn"),
    ("\0nul", "'\0nul"),
    ("plain", "plain"),
    ("a=b", "a=b"),
    ("", ""),
    (None, ""),
    (-5, -5),
    (Decimal("-1.50"), Decimal("-1.50")),
    (True, "true"),
    (b"\x01\xff", "01ff"),
])
def test_cells_a_spreadsheet_would_run_are_neutralised(value, expected):
    assert csv_cell(value) == expected


def test_csv_text_and_streamed_response_escape_every_cell():
    text = csv_text(["name", "amount"], [["=cmd|' /C calc'!A0", -3], ["Ada", 4]])
    assert list(csv.reader(io.StringIO(text))) == [["name", "amount"], ["'=cmd|' /C calc'!A0", "-3"], ["Ada", "4"]]
    response = csv_response("x.csv", ["a"], iter([["@x"], ["y"]]))
    body = b"".join(response.streaming_content).decode()
    assert body == "\ufeffa\r\n'@x\r\ny\r\n"
    assert response["Content-Disposition"] == 'attachment; filename="x.csv"'


can_view = object_permitted("view")
can_change = object_permitted("change")


@pytest.fixture
def segment(users):
    return Segment.objects.create(key="loyal", name="Loyal", owner=users["alice"])


def test_the_owner_may_view_and_change(users, segment):
    assert can_view.test(users["alice"], segment) and can_change.test(users["alice"], segment)
    assert not can_view.test(users["dan"], segment)
    assert not can_view.test(users["alice"], None)


def test_sharing_with_a_user_or_a_group_and_taking_it_back(users, segment):
    object_share(segment, to=users["dan"], action="view")
    assert can_view.test(users["dan"], segment) and not can_change.test(users["dan"], segment)
    team = Group.objects.get(name="compliance_officer")
    object_share(segment, to=team, action="change")
    assert can_change.test(users["cora"], segment) and can_view.test(users["cora"], segment)
    object_unshare(segment, to=users["dan"], action="view")
    assert not can_view.test(users["dan"], segment)
    assert not can_view.test(users["mallory"], segment)


def test_list_querysets_show_only_owned_or_shared_objects(users, segment):
    other = Segment.objects.create(key="other", name="Other", owner=users["dan"])
    Segment.objects.create(key="third", name="Third", owner=None)
    object_share(other, to=users["alice"], action="view")
    assert set(objects_visible_to(users["alice"], Segment.objects.all())) == {segment, other}
    assert set(objects_visible_to(users["alice"], Segment.objects.all(), action="change")) == {segment}
    assert list(objects_visible_to(users["mallory"], Segment.objects.all())) == []


def test_predicates_compose_with_roles(users, segment):
    from cdp.roles import is_admin, is_marketer

    may_edit = is_admin | (is_marketer & object_permitted("change"))
    assert may_edit.test(users["alice"], segment) and may_edit.test(users["root"], segment)
    object_share(segment, to=users["dan"], action="change")
    assert not may_edit.test(users["dan"], segment)  # shared, but not a marketer
    assert isinstance(may_edit, rules.Predicate)


def test_sharing_refuses_unknown_actions_and_anonymous_targets(users, segment):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(ValueError, match="unknown sharing action"):
        object_share(segment, to=users["dan"], action="delete")
    with pytest.raises(ValueError, match="share with a user or a group"):
        object_share(segment, to=AnonymousUser(), action="view")
