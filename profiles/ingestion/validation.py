"""Validation of Segment-spec messages with a compiled validator (msgspec).

`msgspec.convert` checks the types of every known field in C (about half a microsecond per
message, against ~90 µs for a DRF serializer); the few rules between fields (an identifier is
required, a track needs its event, ...) follow in plain Python. Unknown keys are allowed and
kept (Segment says: store or ignore, never reject).
"""

from dataclasses import dataclass
from typing import Annotated

import msgspec

TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})
MAX_ID_LENGTH = 200
MAX_MESSAGE_ID_LENGTH = 100

_Text200 = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
# The Python SDKs stringify ids; other clients send numbers. Booleans and objects are refused.
_Id = _Text200 | int | float | None


class Message(msgspec.Struct):
    """The fields of a message that we read; everything else is kept as sent in `extra`."""

    type: str | None = None
    userId: _Id = None
    anonymousId: _Id = None
    event: _Text200 | None = None
    name: _Text200 | None = None
    category: _Text200 | None = None
    messageId: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_ID_LENGTH)] | int | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    properties: dict | None = None
    traits: dict | None = None
    context: dict | None = None
    integrations: dict | None = None
    groupId: _Id = None
    previousId: _Id = None


KNOWN_KEYS = frozenset(Message.__struct_fields__) | {"writeKey"}


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a message (or a request) was refused: a stable code and a sentence for people."""

    code: str
    message: str


def id_text(value) -> str:
    """An identifier as stored: numbers become strings, null and absent become ""."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def message_check(item, *, path_type: str | None) -> tuple[Message | None, Problem | None]:
    """Type-check one message and apply the per-type rules of the Segment spec."""
    if not isinstance(item, dict):
        return None, Problem("wrong_type", "A message must be a JSON object.")
    try:
        message = msgspec.convert(item, Message)
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = "value_too_long" if "length <=" in text else "wrong_type"
        return None, Problem(code, text)
    if path_type is not None:
        # Single-message routes imply the type; rudder-server overwrites it the same way.
        message.type = path_type
    return message, _rules(message)


def _rules(message: Message) -> Problem | None:
    kind = message.type
    if kind not in TYPES:
        if kind is None:
            return Problem("missing_type", "Every message of a batch needs a type (identify, track, page, screen, "
                                           "group or alias).")
        return Problem("invalid_type", f"Unknown message type {kind[:40]!r}; expected identify, track, page, "
                                       "screen, group or alias.")
    user_id, anonymous_id = id_text(message.userId), id_text(message.anonymousId)
    if kind == "alias":
        if not user_id:
            return Problem("missing_user_id", "An alias needs a userId (the new id).")
        if not id_text(message.previousId):
            return Problem("missing_previous_id", "An alias needs a previousId (the old id).")
        return None
    if not user_id and not anonymous_id:
        return Problem("missing_identifier", "The message needs a userId or an anonymousId (non-empty).")
    if kind == "track" and not message.event:
        return Problem("missing_event", "A track message needs an event name.")
    if kind == "group" and not id_text(message.groupId):
        return Problem("missing_group_id", "A group message needs a groupId.")
    return None
