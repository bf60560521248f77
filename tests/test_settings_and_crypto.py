import base64

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from cdp import crypto
from cdp.env import env_bool, env_int, env_list


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)])
def test_env_bool_reads_common_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("CDP_TEST_FLAG", raw)
    assert env_bool("CDP_TEST_FLAG") is expected


@pytest.mark.parametrize("reader, raw", [(env_bool, "maybe"), (env_int, "12x"), (env_int, "3.5")])
def test_env_helpers_fail_loudly_on_malformed_values(monkeypatch, reader, raw):
    monkeypatch.setenv("CDP_TEST_VALUE", raw)
    with pytest.raises(ImproperlyConfigured, match="CDP_TEST_VALUE"):
        reader("CDP_TEST_VALUE", 0) if reader is env_int else reader("CDP_TEST_VALUE")


def test_env_int_enforces_bounds(monkeypatch):
    monkeypatch.setenv("CDP_TEST_PORT", "70000")
    with pytest.raises(ImproperlyConfigured, match="<= 65535"):
        env_int("CDP_TEST_PORT", 8000, maximum=65535)


def test_env_list_splits_and_trims(monkeypatch):
    monkeypatch.setenv("CDP_TEST_HOSTS", " a.example , b.example,, ")
    assert env_list("CDP_TEST_HOSTS") == ["a.example", "b.example"]


def test_encryption_round_trip_and_fresh_nonce():
    first, second = crypto.encrypt("ada@example.com"), crypto.encrypt("ada@example.com")
    assert first != second
    assert "ada" not in first
    assert crypto.decrypt(first) == crypto.decrypt(second) == "ada@example.com"


def test_tampered_ciphertext_is_refused():
    token = crypto.encrypt("ada@example.com")
    prefix, kid, body = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(f"{prefix}.{kid}.{base64.urlsafe_b64encode(bytes(raw)).decode()}")


def test_key_rotation_keeps_old_ciphertexts_readable():
    old_key, new_key = crypto.generate_key(), crypto.generate_key()
    with override_settings(CDP_ENCRYPTION_KEYS=old_key):
        old_token = crypto.encrypt("+4915112345678")
    with override_settings(CDP_ENCRYPTION_KEYS=f"{new_key},{old_key}"):
        assert crypto.decrypt(old_token) == "+4915112345678"
        assert crypto.key_id_of(crypto.encrypt("x")) == new_key.split(":")[0]
    with override_settings(CDP_ENCRYPTION_KEYS=new_key), pytest.raises(crypto.DecryptionError, match="not configured"):
        crypto.decrypt(old_token)


@pytest.mark.parametrize("spec, message", [("nokey", "must look like"), ("k1:!!!", "base64"),
                                           ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "32 bytes")])
def test_malformed_encryption_keys_fail_loudly(spec, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        crypto.parse_keys(spec)


def test_keyed_hash_depends_on_kind_value_and_key():
    assert crypto.keyed_hash("email", "a@b.c") == crypto.keyed_hash("email", "a@b.c")
    assert crypto.keyed_hash("email", "a@b.c") != crypto.keyed_hash("user_id", "a@b.c")
    with override_settings(CDP_HASH_KEY="another key"):
        other = crypto.keyed_hash("email", "a@b.c")
    assert other != crypto.keyed_hash("email", "a@b.c")
    assert len(other) == 32
