"""Read queries of the segments app: lists, the builder's preview / diff / pickers, segment pages."""

import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg import sql

from profiles.identifiers import readable_value
from profiles.models import Identity, Profile
from segments.evaluation import fields as F
from segments.evaluation import members_statement, sentence
from segments.models import Membership, MembershipChange, Segment, SegmentRun, Timer, WebhookDelivery
from segments.purposes import profiles_with_purposes, segment_purposes_condition
from segments.services.definitions import definition_check

CATALOG_SECONDS = 300
CATALOG_SAMPLE = 20_000
SORTS = {"key": "key", "-key": "-key", "size": "member_count", "-size": "-member_count", "owner": "owner__username",
         "-owner": "-owner__username", "computed": "computed_at", "-computed": "-computed_at",
         "schedule": "schedule_minutes", "-schedule": "-schedule_minutes"}


def segment_count() -> int:
    return Segment.objects.filter(is_active=True).count()


def segment_list(*, user, query: str = "", sort: str = "key", archived: bool = False):
    """Segments the user may see, searched by key / name / description, sorted."""
    segments = Segment.objects.visible_to(user).filter(is_active=not archived).select_related("owner")
    if query:
        segments = segments.filter(Q(key__icontains=query) | Q(name__icontains=query) |
                                   Q(description__icontains=query))
    return segments.order_by(SORTS.get(sort, "key"), "key")


# -- preview and dry-run diff ------------------------------------------------------------------
@dataclass
class Preview:
    size: int | None
    is_estimate: bool
    sample: list[dict]
    sentence: str
    total_profiles: int
    milliseconds: int


def _live_profile_count() -> int:
    count = cache.get("segments:live_profiles")
    if count is None:
        count = Profile.objects.filter(merged_into__isnull=True).count()
        cache.set("segments:live_profiles", count, 60)
    return count


def _run(cursor, query: sql.Composable, params: dict) -> None:
    cursor.execute(query.as_string(cursor.connection), params)


def _estimate(cursor, query: sql.Composable, params: dict) -> int:
    _run(cursor, sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params)
    plan = cursor.fetchone()[0]
    plan = plan[0] if isinstance(plan, list) else plan
    return int(plan["Plan"]["Plan Rows"])


def segment_preview(*, definition: dict, segment: Segment | None = None, sample_size: int = 10) -> Preview:
    """Size and a sample of members for a definition being edited: the exact count when it
    takes under CDP_SEGMENT_PREVIEW_TIMEOUT_MS, else the planner's estimate (labelled)."""
    checked = definition_check(definition, segment=segment)
    began = time.monotonic()
    statement = members_statement(definition, now=timezone.now(), segment_ids=checked.segment_ids)
    size, estimate, ids = None, False, []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = %s", [settings.CDP_SEGMENT_PREVIEW_TIMEOUT_MS])
        try:
            with transaction.atomic():
                _run(cursor, sql.SQL("SELECT count(*) FROM ({}) s").format(statement.query), statement.params)
                size = cursor.fetchone()[0]
            with transaction.atomic():
                _run(cursor, sql.SQL("{} LIMIT %(sample_limit)s").format(statement.query),
                     {**statement.params, "sample_limit": sample_size})
                ids = [row[0] for row in cursor.fetchall()]
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "57014":
                raise
            if size is None:
                size, estimate = _estimate(cursor, statement.query, statement.params), True
    profiles = {p["id"]: p for p in Profile.objects.filter(id__in=ids).values(
        "id", "country", "city", "last_device_type", "last_seen_at")}
    return Preview(size=size, is_estimate=estimate, sample=[profiles[i] for i in ids if i in profiles],
                   sentence=sentence(definition), total_profiles=_live_profile_count(),
                   milliseconds=int((time.monotonic() - began) * 1000))


def segment_diff(*, segment: Segment, definition: dict, sample_size: int = 5) -> dict:
    """What saving `definition` would do to the current members: entering / leaving counts and
    samples, computed by the same compiler against current data (a dry run: nothing is written)."""
    checked = definition_check(definition, segment=segment)
    statement = members_statement(definition, now=timezone.now(), segment_ids=checked.segment_ids)
    # Index: membership_open_uniq (segment_id, profile_id) for the current set.
    query = sql.SQL(
        "WITH new AS MATERIALIZED ({}), cur AS MATERIALIZED (SELECT profile_id FROM segments_membership "
        "WHERE segment_id = %(diff_segment)s AND version_to IS NULL) "
        "SELECT (SELECT count(*) FROM new), "
        "(SELECT count(*) FROM new WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.profile_id = new.profile_id)), "
        "(SELECT count(*) FROM cur WHERE NOT EXISTS (SELECT 1 FROM new WHERE new.profile_id = cur.profile_id)), "
        "ARRAY(SELECT profile_id FROM new WHERE NOT EXISTS (SELECT 1 FROM cur WHERE cur.profile_id = new.profile_id) "
        "LIMIT %(diff_limit)s), "
        "ARRAY(SELECT profile_id FROM cur WHERE NOT EXISTS (SELECT 1 FROM new WHERE new.profile_id = cur.profile_id) "
        "LIMIT %(diff_limit)s)").format(statement.query)
    with connection.cursor() as cursor:
        cursor.execute(query.as_string(cursor.connection),
                       {**statement.params, "diff_segment": segment.pk, "diff_limit": sample_size})
        size, entering, leaving, entering_sample, leaving_sample = cursor.fetchone()
    return {"size": size, "current_size": segment.member_count, "entering": entering, "leaving": leaving,
            "entering_sample": [str(i) for i in entering_sample], "leaving_sample": [str(i) for i in leaving_sample],
            "sentence": sentence(definition)}


# -- pickers: names and values from the actual data, with counts ------------------------------------
def _cached(key: str, compute):
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, CATALOG_SECONDS)
    return value


def _rows(query: str, params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return [{"value": value, "count": count} for value, count in cursor.fetchall()]


def catalog_events(*, days: int = 90) -> list[dict]:
    """Event names seen in the last `days` days with their counts (index: profiles_event_name_ts)."""
    def compute():
        return _rows("SELECT name, count(*) FROM profiles_event WHERE timestamp > %s AND name <> '' "
                     "GROUP BY name ORDER BY count(*) DESC, name LIMIT 200", [timezone.now() - timedelta(days=days)])
    return _cached(f"segments:catalog:events:{days}", compute)


def catalog_properties(*, event: str) -> list[dict]:
    """Top-level property names of recent `event`s (a sample), plus the allowed context paths."""
    def compute():
        found = _rows(
            "SELECT k, count(*) FROM (SELECT properties FROM profiles_event WHERE name = %s AND timestamp > %s "
            "ORDER BY timestamp DESC LIMIT %s) e, jsonb_object_keys(CASE WHEN jsonb_typeof(e.properties) = 'object' "
            "THEN e.properties ELSE '{}'::jsonb END) k GROUP BY k ORDER BY count(*) DESC, k LIMIT 100",
            [event, timezone.now() - timedelta(days=90), CATALOG_SAMPLE])
        return [row for row in found if F.property_path(row["value"])] + [
            {"value": path, "count": None} for path in sorted(F.CONTEXT_PATHS)]
    return _cached(f"segments:catalog:props:{event[:200]}", compute)


def catalog_property_values(*, event: str, prop: str) -> list[dict]:
    """The most frequent values of one property of recent `event`s (a sample), with counts."""
    resolved = F.property_path(prop)
    if resolved is None:
        return []
    column, path = resolved

    def compute():
        query = sql.SQL("SELECT v, count(*) FROM (SELECT {} #>> %s::text[] AS v FROM profiles_event WHERE name = %s "
                        "AND timestamp > %s ORDER BY timestamp DESC LIMIT %s) e WHERE v IS NOT NULL GROUP BY v "
                        "ORDER BY count(*) DESC, v LIMIT 50").format(sql.Identifier(column))
        with connection.cursor() as cursor:
            cursor.execute(query.as_string(cursor.connection),
                           [path, event, timezone.now() - timedelta(days=90), CATALOG_SAMPLE])
            return [{"value": value, "count": count} for value, count in cursor.fetchall()]
    return _cached(f"segments:catalog:values:{event[:100]}:{prop}", compute)


def catalog_traits() -> list[dict]:
    """Every field a trait condition may use, with its type and whether values can be listed."""
    fields = [{"field": name, "label": field.label, "type": field.type, "categorical": field.categorical}
              for name, field in {**F.PROFILE_FIELDS, **F.COMPUTED_FIELDS}.items()]

    def trait_keys():
        return _rows("SELECT k, count(*) FROM (SELECT traits FROM profiles_profile LIMIT %s) p, "
                     "jsonb_object_keys(CASE WHEN jsonb_typeof(p.traits) = 'object' THEN p.traits ELSE '{}'::jsonb END) k "
                     "GROUP BY k ORDER BY count(*) DESC, k LIMIT 100", [CATALOG_SAMPLE])
    for row in _cached("segments:catalog:traitkeys", trait_keys):
        if F.KEY_RE.match(row["value"]):
            fields.append({"field": f"traits.{row['value']}", "label": f"trait {row['value']}", "type": F.JSON,
                           "categorical": True, "count": row["count"]})
    return fields


def catalog_trait_values(*, field: str) -> list[dict]:
    """Values of a categorical field with counts (all live profiles; traits: a sample)."""
    trait = F.trait_field(field)
    if trait is None:
        return []
    if trait.type == F.JSON:
        def compute():
            return _rows("SELECT traits ->> %s AS v, count(*) FROM (SELECT traits FROM profiles_profile LIMIT %s) p "
                         "WHERE traits ? %s GROUP BY v ORDER BY count(*) DESC LIMIT 50",
                         [trait.label, CATALOG_SAMPLE, trait.label])
    elif trait.categorical:
        table = sql.SQL("profiles_profile p" if trait.table == "p" else
                        "profiles_computedtraits c JOIN profiles_profile p ON p.id = c.profile_id")
        query = sql.SQL("SELECT {}.{}, count(*) FROM {} WHERE p.merged_into_id IS NULL "
                        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 50").format(sql.Identifier(trait.table),
                                                                             sql.Identifier(trait.column), table)

        def compute():
            with connection.cursor() as cursor:
                cursor.execute(query.as_string(cursor.connection))
                return [{"value": value, "count": count} for value, count in cursor.fetchall() if value not in ("", None)]
    else:
        return []
    return _cached(f"segments:catalog:traitvalues:{field}", compute)


def catalog_context_values(*, field: str) -> list[dict]:
    if field == "city_size":
        return [{"value": size, "count": None} for size in F.CITY_SIZES]
    if field not in F.CONTEXT_FIELDS:
        return []
    return catalog_trait_values(field=F.CONTEXT_FIELDS[field].column)


def catalog_categories() -> list[dict]:
    """Purchase categories with how many items were bought."""
    return _cached("segments:catalog:categories", lambda: _rows(
        "SELECT category, count(*) FROM profiles_transactionitem WHERE category <> '' GROUP BY category "
        "ORDER BY count(*) DESC, category LIMIT 100", []))


# -- segment page -------------------------------------------------------------------------------
def segment_members(*, segment: Segment):
    """Current members, newest first (index: membership_open_uniq)."""
    return (Membership.objects.filter(segment=segment, version_to__isnull=True,
                                      version_from__lte=segment.membership_version)
            .select_related("profile").order_by("-entered_at", "profile_id"))


def visitor_segments(*, kind: str, value_hash: bytes) -> tuple[object | None, set[int]]:
    """The profile an identifier belongs to (following a merge) and the ids of the active
    segments it is visibly a member of whose required purposes it granted (for content
    decisions; the client-facing lookup is segments.lookup). (None, set()) for an unknown one."""
    with connection.cursor() as cursor:
        # Index: identity_kind_value_uniq (kind, value_hash); profiles_profile pkey.
        cursor.execute("SELECT coalesce(p.merged_into_id, p.id) FROM profiles_identity i "
                       "JOIN profiles_profile p ON p.id = i.profile_id WHERE i.kind = %s AND i.value_hash = %s",
                       [kind, value_hash])
        row = cursor.fetchone()
        if row is None:
            return None, set()
        required = segment_purposes_condition(profile_column=sql.Identifier("m", "profile_id"),
                                              segment_column=sql.Identifier("s", "required_purposes"))
        # Index: membership_profile_idx (profile_id, segment_id).
        cursor.execute(sql.SQL(
            "SELECT s.id FROM segments_membership m JOIN segments_segment s ON s.id = m.segment_id "
            "WHERE m.profile_id = %s AND s.is_active AND m.version_from <= s.membership_version "
            "AND (m.version_to IS NULL OR m.version_to > s.membership_version) AND {}").format(required.sql)
            .as_string(None), [row[0], *required.params])
        return row[0], {segment_id for segment_id, in cursor.fetchall()}


def members_consented(*, memberships: list[Membership], purposes: list[str]) -> list[Membership]:
    """The memberships whose person granted every purpose in `purposes` now (one query per purpose)."""
    if not purposes:
        return memberships
    allowed = profiles_with_purposes(profile_ids=[m.profile_id for m in memberships], purposes=purposes)
    return [m for m in memberships if m.profile_id in allowed]


def profile_emails(*, profile_ids) -> dict:
    """profile id -> one email (decrypted) for a page of members."""
    emails = {}
    for identity in Identity.objects.filter(profile_id__in=list(profile_ids), kind=Identity.Kind.EMAIL).order_by(
            "profile_id", "-last_seen_at"):
        emails.setdefault(identity.profile_id, readable_value(identity))
    return emails


def segment_daily_changes(*, segment: Segment, days: int = 30) -> list[dict]:
    """Entered / exited per UTC day and the size at each day's end, oldest first."""
    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    with connection.cursor() as cursor:
        # Index: membershipchange_seg_at_idx (segment_id, at).
        cursor.execute("SELECT (at AT TIME ZONE 'UTC')::date, count(*) FILTER (WHERE kind = 'entered'), "
                       "count(*) FILTER (WHERE kind = 'exited') FROM segments_membershipchange "
                       "WHERE segment_id = %s AND at >= %s GROUP BY 1", [segment.pk, first])
        per_day = {day: (entered, exited) for day, entered, exited in cursor.fetchall()}
    rows, size = [], segment.member_count
    for offset in range(days):
        day = today - timedelta(days=offset)
        entered, exited = per_day.get(day, (0, 0))
        rows.append({"day": day, "entered": entered, "exited": exited, "size": size})
        size -= entered - exited
    return list(reversed(rows))


def segment_overlap(*, segment: Segment, user, limit: int = 6) -> dict:
    """Intersections between this segment and the largest other segments the user may see."""
    others = list(Segment.objects.visible_to(user).filter(is_active=True).exclude(pk=segment.pk)
                  .order_by("-member_count", "key")[:limit])
    chosen = [segment, *others]
    ids = [s.pk for s in chosen]
    with connection.cursor() as cursor:
        # Index: membership_open_uniq (segment_id, profile_id) on both sides.
        cursor.execute("SELECT a.segment_id, b.segment_id, count(*) FROM segments_membership a "
                       "JOIN segments_membership b ON b.profile_id = a.profile_id AND b.version_to IS NULL "
                       "WHERE a.version_to IS NULL AND a.segment_id = ANY(%s) AND b.segment_id = ANY(%s) "
                       "AND a.segment_id <= b.segment_id GROUP BY 1, 2", [ids, ids])
        counts = {}
        for a, b, count in cursor.fetchall():
            counts[(a, b)] = counts[(b, a)] = count
    matrix = [[counts.get((row.pk, col.pk), 0) for col in chosen] for row in chosen]
    return {"segments": chosen, "matrix": matrix}


def segment_freshness(*, segment: Segment) -> dict:
    now = timezone.now()
    overdue = Timer.objects.filter(segment=segment, due_at__lte=now - timedelta(seconds=60))
    oldest = overdue.order_by("due_at").values_list("due_at", flat=True).first()
    return {
        "runs": list(SegmentRun.objects.filter(segment=segment).select_related("requested_by")[:10]),
        "active_run": SegmentRun.objects.filter(segment=segment, status__in=(
            SegmentRun.Status.QUEUED, SegmentRun.Status.RUNNING)).order_by("-id").first(),
        "pending_timers": Timer.objects.filter(segment=segment).count(),
        "overdue_timers": overdue.count(),
        "oldest_overdue_seconds": int((now - oldest).total_seconds()) if oldest else 0,
    }


def run_progress(run: SegmentRun | None, segment: Segment) -> int | None:
    """Percent done, estimated from the previous run's duration (a recompute is a few statements)."""
    if run is None:
        return None
    if run.status == SegmentRun.Status.QUEUED or not run.started_at:
        return 0
    expected = max(segment.compute_duration_ms or 2000, 500) / 1000
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return min(95, int(100 * elapsed / expected))


def segment_deliveries(*, segment: Segment, limit: int = 20) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(segment=segment)[:limit])


def segment_history(*, segment: Segment, limit: int = 50):
    return MembershipChange.objects.filter(segment=segment).order_by("-at", "-id")[:limit]


def member_rows(*, memberships, user) -> tuple[list[dict], bool]:
    """Rows for a members table or export; personal fields masked unless the user's role may
    see personal data. Returns (rows, masked)."""
    from segments.masking import mask_email, mask_text

    memberships = list(memberships)
    unmasked = user.has_perm("segments.view_personal_data")
    emails = profile_emails(profile_ids=[m.profile_id for m in memberships])
    rows = []
    for membership in memberships:
        profile = membership.profile
        first, last, email, city = profile.first_name or "", profile.last_name or "", emails.get(profile.id, ""), profile.city
        if not unmasked:
            first, last, email, city = mask_text(first), mask_text(last), mask_email(email), mask_text(city)
        rows.append({"profile_id": str(profile.id), "name": " ".join(part for part in (first, last) if part),
                     "email": email, "country": profile.country, "city": city,
                     "last_seen_at": profile.last_seen_at, "entered_at": membership.entered_at})
    return rows, not unmasked
