"""Retention: how long each kind of data is kept (RetentionRule), enforced daily in bounded
batches by `retention_enforce_task`, which re-enqueues itself while a rule has more to do."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from consent.models import RetentionRule
from consent.services.audit import audit_record

logger = logging.getLogger(__name__)

# target -> (table, timestamp column); each DELETE relies on an index on that column:
# profiles_event_ts_brin, rejected_reason_idx is not by time (small table), transaction_ts_idx,
# consent_auditentry_at (db_index).
_TABLES = {
    RetentionRule.Target.EVENTS: ("profiles_event", "timestamp"),
    RetentionRule.Target.REJECTED_EVENTS: ("profiles_rejectedevent", "received_at"),
    RetentionRule.Target.TRANSACTIONS: ("profiles_transaction", "timestamp"),
    RetentionRule.Target.AUDIT_ENTRIES: ("consent_auditentry", "at"),
}
# The events table's primary key is (id, timestamp): batches select both so each partition
# is probed by its key.
_KEYS = {"profiles_event": ("id", "timestamp")}


@dataclass
class RuleRun:
    rule_id: int
    deleted: int = 0
    profiles: int = 0
    finished: bool = True


def _delete_batch(rule: RetentionRule, cutoff, batch: int) -> int:
    table, column = _TABLES[rule.target]
    keys = _KEYS.get(table, ("id",))
    conditions = [sql.SQL("{} < %s").format(sql.Identifier(column))]
    params: list = [cutoff]
    if rule.target == RetentionRule.Target.EVENTS:
        for name, value in (("type", rule.event_type), ("name", rule.event_name)):
            if value:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(name)))
                params.append(value)
    key_list = sql.SQL(", ").join(map(sql.Identifier, keys))
    query = sql.SQL("DELETE FROM {table} WHERE ({keys}) IN (SELECT {keys} FROM {table} WHERE {where} LIMIT %s)").format(
        table=sql.Identifier(table), keys=key_list, where=sql.SQL(" AND ").join(conditions))
    with transaction.atomic(), connection.cursor() as cursor:
        if rule.target == RetentionRule.Target.TRANSACTIONS:  # their items first (same batch)
            cursor.execute("DELETE FROM profiles_transactionitem WHERE transaction_id IN (SELECT id FROM "
                           "profiles_transaction WHERE timestamp < %s LIMIT %s)", [cutoff, batch])
        cursor.execute(query.as_string(cursor.connection), [*params, batch])
        return cursor.rowcount


def _inactive_profiles(rule: RetentionRule, cutoff, batch: int) -> int:
    from consent.services import person as persons
    from profiles.models import Profile

    ids = list(Profile.objects.filter(merged_into__isnull=True, last_seen_at__lt=cutoff)
               .values_list("id", flat=True)[:batch])
    for profile_id in ids:
        person = persons.person_find(kind="profile_id", value=str(profile_id))
        if rule.action == RetentionRule.Action.ANONYMISE:
            persons.person_anonymise(person=person, retention_rule=rule)
        else:
            persons.person_erase(person=person, retention_rule=rule, suppress=False)
    return len(ids)


def retention_rule_run(*, rule: RetentionRule, max_batches: int = 20, now=None) -> RuleRun:
    """Apply one rule for at most `max_batches` batches; `finished` False means more is left."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=rule.days)
    batch = settings.CDP_RETENTION_BATCH
    run = RuleRun(rule.pk)
    if rule.target == RetentionRule.Target.INACTIVE_PROFILES:
        for _ in range(max_batches):
            done = _inactive_profiles(rule, cutoff, min(batch, 200))
            run.profiles += done
            if done < min(batch, 200):
                break
        else:
            run.finished = False
    else:
        for _ in range(max_batches):
            deleted = _delete_batch(rule, cutoff, batch)
            run.deleted += deleted
            if deleted < batch:
                break
        else:
            run.finished = False
    result = {"deleted": run.deleted, "profiles": run.profiles, "finished": run.finished,
              "cutoff": cutoff.isoformat()}
    RetentionRule.objects.filter(pk=rule.pk).update(last_run_at=now, last_result=result)
    audit_record(action="retention.applied", object_type="retention_rule", object_id=rule.pk, details=result)
    logger.info("retention rule applied", extra={"rule_id": rule.pk, **result})
    return run


def retention_enforce(*, max_batches: int = 20) -> list[RuleRun]:
    """Delete expired access exports, then run every active rule once (bounded); the task
    re-enqueues itself if any rule is unfinished."""
    from consent.services.requests import dsr_files_expire

    expired = dsr_files_expire()
    if expired:
        logger.info("access exports expired", extra={"files": expired})
    return [retention_rule_run(rule=rule, max_batches=max_batches)
            for rule in RetentionRule.objects.filter(is_active=True).order_by("id")]

