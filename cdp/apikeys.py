"""API keys of sources: creation (shown once), hashed storage, rotation, revocation, lookup.

Write keys authenticate event ingestion; read keys authenticate segment lookups and content
decisions. Neither works on staff endpoints (those use sessions). Keys are 256-bit random
tokens with a readable prefix (`wk_` / `rk_`); only their SHA-256 is stored.

Lookups are on the hot path (every ingestion request), so a resolved key is cached in-process
for `CACHE_SECONDS`; revocation and expiry are therefore effective within that many seconds
(and immediately in the process that revoked).
"""

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from profiles.models import Source, SourceKey

PREFIXES = {SourceKey.Kind.WRITE: "wk_", SourceKey.Kind.READ: "rk_"}
CACHE_SECONDS = 5.0
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)

_cache: dict[str, tuple[float, "ResolvedKey | None"]] = {}


@dataclass(frozen=True)
class ResolvedKey:
    key_id: int
    source_id: int
    kind: str
    expires_at: datetime | None

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.expires_at is None or self.expires_at > (now or timezone.now())


def key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def source_key_create(*, source: Source, kind: str, created_by=None) -> tuple[SourceKey, str]:
    """Create a key; return it and the raw key, which is never retrievable again."""
    raw = PREFIXES[kind] + secrets.token_urlsafe(32)
    key = SourceKey.objects.create(source=source, kind=kind, prefix=raw[:10], key_hash=key_hash(raw),
                                   created_by=created_by)
    return key, raw


@transaction.atomic
def source_key_rotate(*, key: SourceKey, overlap: timedelta = DEFAULT_ROTATION_OVERLAP,
                      created_by=None) -> tuple[SourceKey, str]:
    """Issue a new key of the same kind; the old one keeps working for `overlap`."""
    expires = timezone.now() + overlap
    SourceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(expires_at=expires)
    _cache.clear()
    return source_key_create(source=key.source, kind=key.kind, created_by=created_by)


@transaction.atomic
def source_key_revoke(*, key: SourceKey) -> None:
    """Revoke now (idempotent)."""
    SourceKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    _cache.clear()


def key_resolve(raw_key: str, *, kind: str) -> ResolvedKey | None:
    """The active key of `kind` matching `raw_key`, or None (unknown, revoked, expired, wrong
    kind, or its source deactivated)."""
    if not raw_key or len(raw_key) > 200:
        return None
    digest = key_hash(raw_key)
    now_monotonic = time.monotonic()
    cached = _cache.get(digest)
    if cached and cached[0] > now_monotonic:
        resolved = cached[1]
    else:
        row = (SourceKey.objects.filter(key_hash=digest, revoked_at__isnull=True, source__is_active=True)
               .values("id", "source_id", "kind", "expires_at").first())
        resolved = ResolvedKey(row["id"], row["source_id"], row["kind"], row["expires_at"]) if row else None
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (now_monotonic + CACHE_SECONDS, resolved)
    if resolved is None or resolved.kind != kind or not resolved.is_usable():
        return None
    return resolved
