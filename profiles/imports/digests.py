"""Keyed digests of sha256(email) for email identities, so enrichment files keyed by hashed
emails match. Imports write them as they create identities; identities created elsewhere (the
ingestion API, identity resolution) get theirs here, before an enrichment file is matched."""

import hashlib

from psycopg import sql

from cdp import crypto
from profiles.identifiers import readable_value
from profiles.models import Identity

SHA256_KIND = "email_sha256"


def email_digest(normalized_email: str) -> bytes:
    return crypto.keyed_hash(SHA256_KIND, hashlib.sha256(normalized_email.encode()).hexdigest())


def email_digests_backfill(cursor, *, batch: int = 10_000) -> int:
    """Add the missing digests (keyset pages over profiles_identity; values decrypted in memory only)."""
    written, last_id = 0, 0
    while True:
        cursor.execute("""
            SELECT i.id, i.value FROM profiles_identity i
            WHERE i.kind = %s AND i.id > %s
              AND NOT EXISTS (SELECT 1 FROM profiles_emaildigest d WHERE d.identity_id = i.id)
            ORDER BY i.id LIMIT %s""", [Identity.Kind.EMAIL, last_id, batch])
        rows = cursor.fetchall()
        if not rows:
            return written
        last_id = rows[-1][0]
        with cursor.copy(sql.SQL("COPY profiles_emaildigest (identity_id, digest_hash) FROM STDIN")) as copy:
            for identity_id, value in rows:
                email = readable_value(Identity(kind=Identity.Kind.EMAIL, value=value))
                copy.write_row((identity_id, email_digest(email)))
        written += len(rows)
