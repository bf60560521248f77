from datetime import UTC, date, datetime

from django.db import connection

from profiles import partitions


def _partition_of(event_timestamp: datetime) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM profiles_event WHERE timestamp = %s", [event_timestamp])
        return cursor.fetchone()[0]


def _insert_event(timestamp: datetime, message_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO profiles_event (timestamp, received_at, message_id, type) VALUES (%s, %s, %s, 'track')",
            [timestamp, timestamp, message_id])


def test_monthly_partitions_cover_the_range_across_a_year_end(db):
    created = partitions.event_partitions_ensure(start=date(2031, 11, 15), end=date(2032, 2, 1))
    assert created == ["profiles_event_y2031m11", "profiles_event_y2031m12", "profiles_event_y2032m01",
                       "profiles_event_y2032m02"]
    assert partitions.event_partitions_ensure(start=date(2031, 11, 15), end=date(2032, 2, 1)) == []


def test_event_outside_partitions_lands_in_default_and_moves_when_its_month_is_created(db):
    historical = datetime(2019, 3, 14, 9, 26, tzinfo=UTC)
    _insert_event(historical, "m-historical")
    assert _partition_of(historical) == "profiles_event_default"

    partitions.event_partitions_ensure(start=date(2019, 3, 1), end=date(2019, 3, 31))

    assert _partition_of(historical) == "profiles_event_y2019m03"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM profiles_event WHERE message_id = 'm-historical'")
        assert cursor.fetchone()[0] == 1


def test_partitions_ahead_covers_this_month_and_the_next_three(db):
    partitions.event_partitions_ahead(months_ahead=3, today=date(2040, 12, 5))
    names = partitions.existing_partitions()
    assert {"profiles_event_y2040m12", "profiles_event_y2041m01", "profiles_event_y2041m02",
            "profiles_event_y2041m03"} <= names
    assert "profiles_event_y2041m04" not in names
