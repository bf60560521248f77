"""Model fields shared by the apps."""

from django.db import models

from cdp import crypto


class EncryptedTextField(models.TextField):
    """Text encrypted at rest with `cdp.crypto` (AES-GCM, key id in the value).

    Equality lookups cannot work on it (every encryption uses a fresh nonce): search through
    the keyed-hash column that sits beside every encrypted identifier instead.
    """

    def from_db_value(self, value, expression, connection):
        return crypto.decrypt(value) if value is not None else None

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return None if value is None else crypto.encrypt(value)
