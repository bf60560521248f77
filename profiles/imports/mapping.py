"""Mappings: which file column feeds which field, checked and compiled into a `Plan` that the
cleaning and validation steps follow."""

from dataclasses import dataclass, field

import pandas as pd

from profiles.imports import fields as F
from profiles.imports.cleaning import CHANNELS, DATE_FORMATS, DEFAULT_LABEL_MAPS, iso_currencies, now_utc

OPTION_KEYS = {"date_format", "decimal_comma", "label_maps", "default_currency", "default_channel", "phone_region",
               "encoding", "delimiter"}
ENCODINGS = {"utf-8", "utf-8-sig", "cp1252", "latin-1"}


class MappingError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Plan:
    kind: str
    columns: dict[str, str]  # header -> target field, mapped columns only
    date_format: str = "iso"
    decimal_comma: bool = False
    label_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    default_currency: str = ""
    default_channel: str = "web"
    phone_region: str | None = None
    now: pd.Timestamp = field(default_factory=now_utc)

    def header_of(self, target: str) -> str | None:
        return next((h for h, t in self.columns.items() if t == target), None)

    @property
    def targets(self) -> set[str]:
        return set(self.columns.values())


def mapping_check(*, kind: str, headers: list[str], columns: dict[str, str]) -> list[str]:
    """Problems with a mapping, in words for the person fixing it (empty: fine)."""
    problems = []
    known = F.fields_for(kind)
    seen: dict[str, str] = {}
    for header, target in columns.items():
        if header not in headers:
            problems.append(f"The file has no column “{header}”.")
            continue
        if not target:
            continue
        if target.startswith(F.CUSTOM_PREFIX):
            if kind == F.TRANSACTIONS:
                problems.append("Transaction files cannot carry custom traits; import them as a profile file.")
            elif not F.valid_trait_name(target[len(F.CUSTOM_PREFIX):]):
                problems.append(f"“{target[len(F.CUSTOM_PREFIX):]}” is not a valid trait name "
                                "(lower-case letters, digits and _; starting with a letter).")
        elif target not in known:
            problems.append(f"“{target}” is not a field of a {kind} import.")
        if target in seen:
            problems.append(f"Columns “{seen[target]}” and “{header}” both feed {F.field_label(kind, target)}.")
        seen[target] = header
    targets = set(seen)
    if not targets & set(F.identifier_fields(kind)):
        names = ", ".join(F.field_label(kind, f) for f in F.identifier_fields(kind))
        problems.append(f"Map at least one customer identifier column ({names}).")
    for required in F.required_fields(kind):
        if required not in targets:
            problems.append(f"Map a column to {F.field_label(kind, required)}: every row needs it.")
    consent = {"consent_purpose", "consent_granted"} & targets
    if consent and len(consent) < 2:
        problems.append("Consent needs both a purpose column and a granted column.")
    return problems


def options_check(options: dict) -> list[str]:
    problems = []
    unknown = set(options) - OPTION_KEYS
    if unknown:
        problems.append(f"Unknown options: {', '.join(sorted(unknown))}.")
    if options.get("date_format", "iso") not in DATE_FORMATS:
        problems.append(f"Date format must be one of {', '.join(DATE_FORMATS)}.")
    currency = options.get("default_currency", "")
    if currency and currency.upper() not in iso_currencies():
        problems.append(f"Default currency “{currency}” is not an ISO 4217 code.")
    if options.get("default_channel", "web") not in CHANNELS:
        problems.append(f"Default channel must be one of {', '.join(sorted(CHANNELS))}.")
    if options.get("encoding") and options["encoding"] not in ENCODINGS:
        problems.append(f"Encoding must be one of {', '.join(sorted(ENCODINGS))}.")
    if options.get("delimiter") and options["delimiter"] not in {",", ";", "\t", "|"}:
        problems.append("Delimiter must be a comma, semicolon, tab or pipe.")
    label_maps = options.get("label_maps", {})
    if not isinstance(label_maps, dict) or not all(isinstance(v, dict) for v in label_maps.values()):
        problems.append("Label maps must be {field: {label: value}}.")
    if not isinstance(options.get("decimal_comma", False), bool):
        problems.append("decimal_comma must be true or false.")
    return problems


def plan_build(*, kind: str, headers: list[str], columns: dict[str, str], options: dict) -> Plan:
    """A checked Plan, or MappingError listing every problem."""
    problems = mapping_check(kind=kind, headers=headers, columns=columns) + options_check(options)
    if problems:
        raise MappingError(problems)
    label_maps = {name: dict(mapping) for name, mapping in DEFAULT_LABEL_MAPS.items()}
    for name, mapping in (options.get("label_maps") or {}).items():
        label_maps.setdefault(name, {}).update({str(k): str(v) for k, v in mapping.items()})
    return Plan(
        kind=kind, columns={h: t for h, t in columns.items() if t},
        date_format=options.get("date_format", "iso"), decimal_comma=bool(options.get("decimal_comma", False)),
        label_maps=label_maps, default_currency=(options.get("default_currency") or "").upper(),
        default_channel=options.get("default_channel") or "web", phone_region=options.get("phone_region") or None,
    )


def label_map_text(mapping: dict[str, str]) -> str:
    """{'M': 'male'} -> 'M = male' lines, for the editable text box."""
    return "\n".join(f"{k} = {v}" for k, v in mapping.items())


def label_map_parse(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            if key.strip():
                result[key.strip()] = value.strip()
    return result
