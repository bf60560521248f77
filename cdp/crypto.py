"""Encryption of personal data at rest and keyed hashes for matching it.

- `encrypt` / `decrypt`: AES-256-GCM with a random 96-bit nonce. A ciphertext names the key
  that made it (`e1.<key id>.<base64>`), so keys rotate without a flag day: the first key in
  CDP_ENCRYPTION_KEYS encrypts, every listed key decrypts, and `manage.py
  rotate_encryption_key` re-encrypts old rows.
- `keyed_hash`: HMAC-SHA256 under CDP_HASH_KEY of `<kind>:<normalized value>`. Identity
  matching, suppression lists and evidence hashes use it, so matching never needs plaintext.
"""

import base64
import binascii
import hashlib
import hmac
import os
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "e1"


class DecryptionError(ValueError):
    pass


def generate_key() -> str:
    """A new `kid:base64key` entry for CDP_ENCRYPTION_KEYS."""
    kid = binascii.hexlify(os.urandom(4)).decode()
    return f"{kid}:{base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    keys = []
    for entry in [e.strip() for e in spec.split(",") if e.strip()]:
        kid, sep, material = entry.partition(":")
        if not sep or not kid.isalnum():
            raise ImproperlyConfigured("CDP_ENCRYPTION_KEYS entries must look like '<key id>:<base64 key>'")
        try:
            raw = base64.b64decode(material, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise ImproperlyConfigured(f"CDP_ENCRYPTION_KEYS key {kid!r} is not valid base64") from None
        if len(raw) != 32:
            raise ImproperlyConfigured(f"CDP_ENCRYPTION_KEYS key {kid!r} must be 32 bytes (AES-256)")
        keys.append((kid, raw))
    if not keys:
        raise ImproperlyConfigured("CDP_ENCRYPTION_KEYS must name at least one key")
    return keys


@lru_cache(maxsize=8)
def _keyring(spec: str) -> tuple[str, dict[str, AESGCM]]:
    keys = parse_keys(spec)
    return keys[0][0], {kid: AESGCM(raw) for kid, raw in keys}


def active_key_id() -> str:
    return _keyring(settings.CDP_ENCRYPTION_KEYS)[0]


def encrypt(plaintext: str | None) -> str | None:
    if plaintext is None:
        return None
    kid, ring = _keyring(settings.CDP_ENCRYPTION_KEYS)
    nonce = os.urandom(12)
    sealed = ring[kid].encrypt(nonce, plaintext.encode(), kid.encode())
    return f"{PREFIX}.{kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"


def decrypt(token: str | None) -> str | None:
    if token is None:
        return None
    prefix, _, rest = token.partition(".")
    kid, _, body = rest.partition(".")
    if prefix != PREFIX or not body:
        raise DecryptionError("not an encrypted value")
    ring = _keyring(settings.CDP_ENCRYPTION_KEYS)[1]
    if kid not in ring:
        raise DecryptionError(f"encryption key {kid!r} is not configured")
    raw = base64.urlsafe_b64decode(body)
    try:
        return ring[kid].decrypt(raw[:12], raw[12:], kid.encode()).decode()
    except Exception as exc:  # InvalidTag: wrong key or tampered value
        raise DecryptionError("value failed authentication") from exc


def key_id_of(token: str) -> str:
    return token.split(".", 2)[1]


def keyed_hash(kind: str, normalized_value: str) -> bytes:
    """HMAC-SHA256 of `kind:value`; 32 raw bytes, stored as bytea."""
    key = settings.CDP_HASH_KEY.encode()
    return hmac.new(key, f"{kind}:{normalized_value}".encode(), hashlib.sha256).digest()


def keyed_hash_hex(kind: str, normalized_value: str) -> str:
    return keyed_hash(kind, normalized_value).hex()


# Files (data-subject access exports) are sealed the same way: `e1.<key id>.` + nonce + ciphertext.
def encrypt_bytes(data: bytes) -> bytes:
    kid, ring = _keyring(settings.CDP_ENCRYPTION_KEYS)
    nonce = os.urandom(12)
    return f"{PREFIX}.{kid}.".encode() + nonce + ring[kid].encrypt(nonce, data, kid.encode())


def decrypt_bytes(blob: bytes) -> bytes:
    prefix, _, rest = blob.partition(b".")
    kid_bytes, _, body = rest.partition(b".")
    kid = kid_bytes.decode(errors="replace")
    if prefix != PREFIX.encode() or len(body) < 13:
        raise DecryptionError("not an encrypted file")
    ring = _keyring(settings.CDP_ENCRYPTION_KEYS)[1]
    if kid not in ring:
        raise DecryptionError(f"encryption key {kid!r} is not configured")
    try:
        return ring[kid].decrypt(body[:12], body[12:], kid.encode())
    except Exception as exc:
        raise DecryptionError("file failed authentication") from exc


def key_id_of_bytes(blob: bytes) -> str:
    return blob.split(b".", 2)[1].decode(errors="replace")
