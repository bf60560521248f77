"""The registry of where personal data lives.

Every app declares its locations in `<app>/pii.py` as `LOCATIONS = [PiiLocation(...), ...]`.
Erasure, anonymisation, access exports and the "nothing of the person remains" test walk this
registry, so a new model holding personal data MUST be declared here (a test checks that every
model of the project is either declared or explicitly listed as holding none).

Encrypted columns: every `cdp.fields.EncryptedTextField` is found automatically by
`manage.py rotate_encryption_key`; a plain text column that holds ciphertext for some rows
(profiles.Identity.value for emails and phones) is declared in its app's pii.py as
`ENCRYPTED_COLUMNS = [EncryptedColumn(...)]`.
"""

from dataclasses import dataclass, field
from importlib import import_module

from django.apps import apps

PROJECT_APPS = ("cdp", "profiles", "segments", "consent", "content")


@dataclass(frozen=True)
class PiiLocation:
    model: str  # "app_label.ModelName"
    subject: str  # ORM path from the model to the profile id, e.g. "profile_id" or "transaction__profile_id"
    fields: tuple[str, ...] = ()  # fields holding personal data (empty: the row as a whole is about the person)
    on_erasure: str = "delete"  # "delete" | "keep_hashed" (e.g. the consent ledger) | "cascade" (deleted with its parent)
    note: str = ""
    # Rows found by the person's identifiers rather than a profile: (kind column, keyed-hash
    # column), matched against HMAC(kind:value) of every identifier of the person.
    hash_columns: tuple[str, str] | tuple[()] = ()


@dataclass(frozen=True)
class EncryptedColumn:
    model: str  # "app_label.ModelName"
    field: str
    where: str = ""  # constant SQL condition selecting the encrypted rows, e.g. "kind IN ('email', 'phone')"


@dataclass(frozen=True)
class NoPii:
    model: str
    reason: str


@dataclass
class Registry:
    locations: list[PiiLocation] = field(default_factory=list)
    no_pii: list[NoPii] = field(default_factory=list)
    encrypted_columns: list[EncryptedColumn] = field(default_factory=list)
    # Tables emptied together with every profile (`profiles_wipe`, demo reloads): rows about
    # profiles that TRUNCATE ... CASCADE cannot reach because they carry no foreign key.
    wiped_with_profiles: list[str] = field(default_factory=list)

    def declared_models(self) -> set[str]:
        return {entry.model for entry in self.locations} | {entry.model for entry in self.no_pii}


def registry() -> Registry:
    result = Registry()
    for app_label in PROJECT_APPS:
        try:
            module = import_module(f"{app_label}.pii")
        except ModuleNotFoundError:
            continue
        result.locations.extend(getattr(module, "LOCATIONS", []))
        result.no_pii.extend(getattr(module, "NO_PII", []))
        result.encrypted_columns.extend(getattr(module, "ENCRYPTED_COLUMNS", []))
        result.wiped_with_profiles.extend(getattr(module, "WIPED_WITH_PROFILES", []))
    return result


def undeclared_models() -> list[str]:
    """Models of the project apps that the registry says nothing about."""
    declared = registry().declared_models()
    found = []
    for app_label in PROJECT_APPS:
        for model in apps.get_app_config(app_label).get_models():
            label = f"{model._meta.app_label}.{model.__name__}"
            if label not in declared:
                found.append(label)
    return sorted(found)
