"""Decoder for IAB Transparency & Consent Framework v2 TC strings (TCF v2.0 – v2.2).

A TC string is one or more segments joined by "."; each segment is base64url without padding
and read as a big-endian bit string. The first segment is the core string; later segments start
with a 3-bit segment type (1 disclosed vendors, 2 allowed vendors, 3 publisher TC).

Core segment fields, in order (bits): Version 6, Created 36 (deciseconds since the epoch),
LastUpdated 36, CmpId 12, CmpVersion 12, ConsentScreen 6, ConsentLanguage 12 (two letters of
6 bits, A=0), VendorListVersion 12, TcfPolicyVersion 6, IsServiceSpecific 1,
UseNonStandardStacks 1, SpecialFeatureOptIns 12, PurposesConsent 24, PurposesLITransparency 24,
PurposeOneTreatment 1, PublisherCC 12, then the vendor consent section, the vendor legitimate
interest section (each: MaxVendorId 16, IsRangeEncoding 1, then a bit field of MaxVendorId bits
or NumEntries 12 of [IsARange 1, StartOrOnlyVendorId 16, EndVendorId 16 if a range]), and the
publisher restrictions (NumPubRestrictions 12 of [PurposeId 6, RestrictionType 2, range entries]).
"""

import base64
import binascii
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

MAX_LENGTH = 20_000  # a real TC string is a few hundred characters; refuse absurd input early


class TCStringError(ValueError):
    """The string is not a decodable TCF v2 TC string (the message says why)."""


class _Bits:
    def __init__(self, segment: str):
        if not segment:
            raise TCStringError("empty segment")
        try:
            raw = base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise TCStringError("segment is not base64url") from None
        self.value = int.from_bytes(raw, "big")
        self.length = len(raw) * 8
        self.position = 0

    def read(self, width: int) -> int:
        if self.position + width > self.length:
            raise TCStringError(f"string ends early (needed {width} bits at bit {self.position})")
        shift = self.length - self.position - width
        self.position += width
        return (self.value >> shift) & ((1 << width) - 1)

    def flag(self) -> bool:
        return bool(self.read(1))

    def ids(self, width: int) -> list[int]:
        """Bit field of `width` bits: the 1-based ids whose bit is set."""
        bits = self.read(width) if width else 0
        return [i + 1 for i in range(width) if bits >> (width - 1 - i) & 1]

    def letters(self) -> str:
        return "".join(chr(ord("A") + self.read(6)) for _ in range(2))

    def deciseconds(self) -> datetime:
        return datetime.fromtimestamp(self.read(36) / 10, UTC)

    def ranges(self) -> list[list[int]]:
        # Kept as [start, end] pairs, never expanded: 4095 entries of 1-65535 would otherwise
        # be 268 M ids from a 100-byte string.
        entries = []
        for _ in range(self.read(12)):
            is_range = self.flag()
            start = self.read(16)
            end = self.read(16) if is_range else start
            if end < start:
                raise TCStringError(f"vendor range {start}-{end} runs backwards")
            entries.append([start, end])
        return _merge(entries)

    def vendors(self) -> list[list[int]]:
        max_id = self.read(16)
        return self.ranges() if self.flag() else _merge([[i, i] for i in self.ids(max_id)])


def _merge(entries: list[list[int]]) -> list[list[int]]:
    """Sorted, non-overlapping [start, end] ranges (adjacent ones joined)."""
    merged: list[list[int]] = []
    for start, end in sorted(entries):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


@dataclass
class TCString:
    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_stacks: bool
    special_feature_opt_ins: list[int]
    purposes_consent: list[int]
    purposes_legitimate_interest: list[int]
    purpose_one_treatment: bool
    publisher_country: str
    # Vendor sets as sorted [start, end] ranges.
    vendor_consents: list[list[int]]
    vendor_legitimate_interests: list[list[int]]
    publisher_restrictions: list[dict] = field(default_factory=list)
    disclosed_vendors: list[list[int]] | None = None
    allowed_vendors: list[list[int]] | None = None
    publisher_purposes_consent: list[int] | None = None
    publisher_purposes_legitimate_interest: list[int] | None = None

    def vendor_consented(self, vendor_id: int) -> bool:
        return any(start <= vendor_id <= end for start, end in self.vendor_consents)

    def summary(self) -> dict:
        """What the ledger stores next to the verbatim string (JSON-safe)."""
        data = asdict(self)
        data["created"] = self.created.isoformat().replace("+00:00", "Z")
        data["last_updated"] = self.last_updated.isoformat().replace("+00:00", "Z")
        return data


def decode(tc_string: str) -> TCString:
    """Decode a TCF v2 TC string; raises TCStringError with a reason for anything else."""
    if not isinstance(tc_string, str) or not tc_string.strip():
        raise TCStringError("empty TC string")
    if len(tc_string) > MAX_LENGTH:
        raise TCStringError("TC string is too long")
    segments = tc_string.strip().split(".")
    core = _Bits(segments[0])
    version = core.read(6)
    if version != 2:
        raise TCStringError(f"TC string version {version} is not supported (v2 only)")
    result = TCString(
        version=version, created=core.deciseconds(), last_updated=core.deciseconds(),
        cmp_id=core.read(12), cmp_version=core.read(12), consent_screen=core.read(6),
        consent_language=core.letters(), vendor_list_version=core.read(12), policy_version=core.read(6),
        is_service_specific=core.flag(), use_non_standard_stacks=core.flag(),
        special_feature_opt_ins=core.ids(12), purposes_consent=core.ids(24),
        purposes_legitimate_interest=core.ids(24), purpose_one_treatment=core.flag(),
        publisher_country=core.letters(), vendor_consents=[], vendor_legitimate_interests=[],
    )
    result.vendor_consents = core.vendors()
    result.vendor_legitimate_interests = core.vendors()
    for _ in range(core.read(12)):
        purpose_id, restriction_type = core.read(6), core.read(2)
        result.publisher_restrictions.append({"purpose": purpose_id, "restriction_type": restriction_type,
                                              "vendors": core.ranges()})
    for segment in segments[1:]:
        _decode_segment(_Bits(segment), result)
    return result


def _decode_segment(bits: _Bits, result: TCString) -> None:
    segment_type = bits.read(3)
    if segment_type == 1:
        result.disclosed_vendors = bits.vendors()
    elif segment_type == 2:
        result.allowed_vendors = bits.vendors()
    elif segment_type == 3:
        result.publisher_purposes_consent = bits.ids(24)
        result.publisher_purposes_legitimate_interest = bits.ids(24)
        custom = bits.read(6)
        bits.ids(custom)  # custom purpose consents
        bits.ids(custom)  # custom purpose legitimate interests
    else:
        raise TCStringError(f"unknown segment type {segment_type}")
