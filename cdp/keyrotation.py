"""Re-encrypt personal data under the first key of CDP_ENCRYPTION_KEYS (`manage.py
rotate_encryption_key`): every EncryptedTextField of the project's models, every column declared
in an app's pii.py ENCRYPTED_COLUMNS, and sealed access-request files.

Works in batches by primary key (keyset pagination, one transaction per batch), so it can run
on a live system and be interrupted and re-run: rows already under the active key are skipped
by their `e1.<key id>.` prefix. Values that no configured key opens are counted, never changed.
"""

import logging
import uuid
from dataclasses import dataclass, field

from django.apps import apps
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from psycopg import sql

from cdp import crypto
from cdp.fields import EncryptedTextField
from cdp.pii import PROJECT_APPS, EncryptedColumn, registry

logger = logging.getLogger(__name__)


@dataclass
class ColumnResult:
    label: str
    reencrypted: int = 0
    failed: int = 0


@dataclass
class RotationResult:
    key_id: str
    columns: list[ColumnResult] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(column.failed for column in self.columns)


def encrypted_columns() -> list[EncryptedColumn]:
    found = []
    for app_label in PROJECT_APPS:
        for model in apps.get_app_config(app_label).get_models():
            for model_field in model._meta.concrete_fields:
                if isinstance(model_field, EncryptedTextField):
                    found.append(EncryptedColumn(f"{model._meta.label}", model_field.name))
    return found + registry().encrypted_columns


def _rotate_column(column: EncryptedColumn, active: str, batch_size: int, dry_run: bool) -> ColumnResult:
    model = apps.get_model(column.model)
    table = model._meta.db_table
    pk = model._meta.pk.column
    target = model._meta.get_field(column.field).column
    result = ColumnResult(f"{column.model}.{column.field}")
    where = sql.SQL(" AND ({})").format(sql.SQL(column.where)) if column.where else sql.SQL("")
    select = sql.SQL("SELECT {pk}, {col} FROM {table} WHERE {pk} > %s AND {col} LIKE %s AND {col} NOT LIKE %s{where} "
                     "ORDER BY {pk} LIMIT %s").format(pk=sql.Identifier(pk), col=sql.Identifier(target),
                                                      table=sql.Identifier(table), where=where)
    # Typed key array, so the join uses the primary key index.
    key_type = sql.SQL(model._meta.pk.rel_db_type(connection))
    update = sql.SQL("UPDATE {table} t SET {col} = v.value FROM unnest(%s::{key_type}[], %s::text[]) AS v(pk, value) "
                     "WHERE t.{pk} = v.pk").format(table=sql.Identifier(table), col=sql.Identifier(target),
                                                   pk=sql.Identifier(pk), key_type=key_type)
    last = None
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(select.as_string(cursor.connection),
                           [last if last is not None else _lowest(model), f"{crypto.PREFIX}.%",
                            f"{crypto.PREFIX}.{active}.%", batch_size])
            rows = cursor.fetchall()
            if not rows:
                return result
            keys, values = [], []
            for key, token in rows:
                try:
                    plaintext = crypto.decrypt(token)
                except crypto.DecryptionError:
                    result.failed += 1
                    continue
                keys.append(key)
                values.append(crypto.encrypt(plaintext))
            if keys and not dry_run:
                cursor.execute(update.as_string(cursor.connection), [keys, values])
            result.reencrypted += len(keys)
            last = rows[-1][0]


def _lowest(model):
    """A value below every primary key of the model (start of the keyset pagination)."""
    internal = model._meta.pk.get_internal_type()
    if internal == "UUIDField":
        return uuid.UUID(int=0)
    return -(2 ** 63) if "Integer" in internal or "AutoField" in internal else ""


def _rotate_files(active: str, dry_run: bool) -> ColumnResult:
    from consent.models import DataSubjectRequest

    result = ColumnResult("access-request files")
    # values_list: loading the model would decrypt its encrypted fields, which may not open yet.
    for name in DataSubjectRequest.objects.exclude(result_file="").values_list("result_file", flat=True):
        if not default_storage.exists(name):
            continue
        with default_storage.open(name, "rb") as handle:
            blob = handle.read()
        if crypto.key_id_of_bytes(blob) == active:
            continue
        try:
            sealed = crypto.encrypt_bytes(crypto.decrypt_bytes(blob))
        except crypto.DecryptionError:
            result.failed += 1
            continue
        if not dry_run:
            default_storage.delete(name)
            default_storage.save(name, ContentFile(sealed))
        result.reencrypted += 1
    return result


def encryption_key_rotate(*, batch_size: int = 1000, dry_run: bool = False, progress=None) -> RotationResult:
    """Re-encrypt everything not yet under the active (first) key."""
    active = crypto.active_key_id()
    result = RotationResult(active)
    for column in encrypted_columns():
        column_result = _rotate_column(column, active, batch_size, dry_run)
        result.columns.append(column_result)
        if progress:
            progress(column_result)
    files = _rotate_files(active, dry_run)
    result.columns.append(files)
    if progress:
        progress(files)
    logger.info("encryption key rotation", extra={"key_id": active, "values": sum(c.reencrypted for c in
                                                                                  result.columns),
                                                  "failed": result.failed})
    return result
