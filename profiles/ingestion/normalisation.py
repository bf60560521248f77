"""A valid message -> one events-table row, and the transaction an order event carries.

The row layout is the contract with identity resolution (see docs/architecture.md): ids as
strings ("" when absent), `name` = track event / page or screen name, `traits` = identify or
group traits (identify: top-level traits over context.traits, because rudder sends only
context.traits), `extra` = integrations and every other key as sent, timestamps skew-corrected
as Segment does: timestamp = receivedAt - (sentAt - originalTimestamp).
"""

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import orjson

from profiles.ingestion.validation import KNOWN_KEYS, Message, Problem, id_text

# Columns written by COPY, in this order (profile_id stays NULL until identity resolution).
EVENT_COLUMNS = ("timestamp", "original_timestamp", "sent_at", "received_at", "source_id", "message_id", "type",
                 "name", "category", "anonymous_id", "user_id", "group_id", "previous_id", "properties", "traits",
                 "context", "extra")
ORDER_EVENTS = frozenset({"Order Completed", "order_completed"})
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_MAX_AMOUNT = Decimal("1e12")
_CENT = Decimal("0.01")
_NUL_TEXT = "\\u0000"


@dataclass(slots=True)
class OrderItem:
    sku: str
    name: str
    category: str
    price: Decimal
    quantity: int


@dataclass(slots=True)
class Order:
    order_id: str
    amount: Decimal
    currency: str
    timestamp: datetime
    items: list[OrderItem] = field(default_factory=list)


@dataclass(slots=True)
class Normalised:
    message_id: str
    row: tuple
    order: Order | None = None
    order_problem: Problem | None = None
    # For the consent gate: the message as received (envelope merged), its batch index, and the
    # (kind, raw value) identifiers identity resolution would read from it.
    item: dict | None = None
    index: int | None = None
    identifiers: tuple[tuple[str, str], ...] = ()
    subject_ids: int = 0  # how many leading identifiers are the message's userId / anonymousId


def parse_time(value: str | None) -> datetime | None:
    """An ISO-8601 time (any offset; none means UTC), or None when absent or unparseable."""
    if not value or len(value) > 64:
        return None
    return _parse_time(value)


@lru_cache(maxsize=512)  # a batch shares its sentAt, and often timestamps
def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def corrected_timestamp(*, received_at: datetime, sent_at: datetime | None, original: datetime | None) -> datetime:
    """Segment's clock-skew correction; unparseable or absurd inputs fall back as documented."""
    if original is None:
        return received_at
    if sent_at is None:
        return original
    try:
        return received_at - (sent_at - original)
    except OverflowError:
        return original


def _json(value) -> str:
    return orjson.dumps(value).decode() if value else "{}"


def message_normalise(message: Message, item: dict, *, source_id: int, received_at: datetime,
                      envelope_sent_at: str | None = None) -> tuple[Normalised | None, Problem | None]:
    """Build the events row of a validated message (envelope context/integrations already merged)."""
    sent_at_text = message.sentAt or envelope_sent_at
    original_text = message.originalTimestamp or message.timestamp
    sent_at = parse_time(sent_at_text)
    timestamp = corrected_timestamp(received_at=received_at, sent_at=sent_at, original=parse_time(original_text))
    kind = message.type
    context = message.context or {}
    if kind == "identify":
        context_traits = context.get("traits")
        traits = {**context_traits, **(message.traits or {})} if isinstance(context_traits, dict) else message.traits
    elif kind == "group":
        traits = message.traits
    else:
        traits = None
    extra = {key: value for key, value in item.items() if key not in KNOWN_KEYS}
    if message.integrations is not None:
        extra["integrations"] = message.integrations
    if message.originalTimestamp and message.timestamp:
        extra["timestamp"] = message.timestamp  # both sent: keep the one not stored as original
    if kind == "track":
        name, category = message.event, ""
    elif kind in ("page", "screen"):
        name, category = message.name or "", message.category or ""
    else:
        name, category = "", ""
    message_id = id_text(message.messageId) or f"srv-{uuid.uuid4()}"
    texts = (message_id, name, category, id_text(message.anonymousId), id_text(message.userId),
             id_text(message.groupId), id_text(message.previousId), original_text or "")
    documents = (_json(message.properties), _json(traits), _json(context), _json(extra))
    # PostgreSQL text and jsonb cannot hold NUL; one scan of the joined values is the cheap check.
    if "\x00" in "".join(texts) or _NUL_TEXT in "".join(documents):
        return None, Problem("invalid_characters", "The message contains the NUL character (\\u0000), which "
                                                   "cannot be stored; remove it and replay.")
    row = (timestamp, original_text, sent_at, received_at, source_id, message_id, kind, *texts[1:7], *documents)
    normalised = Normalised(message_id=message_id, row=row, item=item,
                            identifiers=message_identifiers(kind, texts[3], texts[4], texts[6], traits),
                            subject_ids=bool(texts[3]) + bool(texts[4]))
    if kind == "track" and name in ORDER_EVENTS:
        normalised.order, normalised.order_problem = order_from(message.properties or {}, timestamp=timestamp)
    return normalised, None


def message_identifiers(kind: str, anonymous_id: str, user_id: str, previous_id: str,
                        traits: dict | None) -> tuple[tuple[str, str], ...]:
    """The identifiers resolution would take from a message: its userId and anonymousId (first,
    in this order), an alias's previousId (as either kind: resolution decides which), an
    identify's email and phone traits."""
    found = []
    if user_id:
        found.append(("user_id", user_id))
    if anonymous_id:
        found.append(("anonymous_id", anonymous_id))
    if kind == "alias" and previous_id:
        found += [("user_id", previous_id), ("anonymous_id", previous_id)]
    elif kind == "identify" and traits:
        for trait in ("email", "phone"):
            value = traits.get(trait)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                found.append((trait, str(value)))
    return tuple(found)


def _amount(value, label: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{label} must be a number")
    try:
        amount = Decimal(str(value)).quantize(_CENT)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{label} must be a number") from None
    if not amount.is_finite() or abs(amount) >= _MAX_AMOUNT:
        raise ValueError(f"{label} is out of range")
    return amount


def _text(value, label: str, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{label} must be a string")
    text = id_text(value)
    if len(text) > limit:
        raise ValueError(f"{label} is longer than {limit} characters")
    if "\x00" in text:
        raise ValueError(f"{label} contains the NUL character")
    return text


def _items(products) -> list[OrderItem]:
    if products is None:
        return []
    if not isinstance(products, list):
        raise ValueError("products must be a list")
    items = []
    for index, product in enumerate(products):
        if not isinstance(product, dict):
            raise ValueError(f"products[{index}] must be an object")
        label = f"products[{index}]"
        quantity = product.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int | float) or quantity < 0 or quantity != int(
                quantity) or quantity > 1_000_000:
            raise ValueError(f"{label}.quantity must be a whole number >= 0")
        items.append(OrderItem(
            sku=_text(product.get("product_id", product.get("sku")), f"{label}.product_id", 64),
            name=_text(product.get("name"), f"{label}.name", 200),
            category=_text(product.get("category"), f"{label}.category", 80),
            price=_amount(product.get("price", 0), f"{label}.price"),
            quantity=int(quantity)))
    return items


def order_from(properties: dict, *, timestamp: datetime) -> tuple[Order | None, Problem | None]:
    """The transaction of an Order Completed event (Segment e-commerce spec v2), or why not."""
    from django.conf import settings

    try:
        order_id = _text(properties.get("order_id"), "order_id", 100)
        if not order_id:
            raise ValueError("order_id is required")
        items = _items(properties.get("products"))
        if properties.get("total") is not None:
            amount = _amount(properties["total"], "total")
        elif properties.get("revenue") is not None:
            amount = _amount(properties["revenue"], "revenue")
        else:
            amount = sum((item.price * item.quantity for item in items), Decimal("0.00"))
        currency = properties.get("currency") or settings.CDP_INGEST_DEFAULT_CURRENCY
        if not isinstance(currency, str) or not _CURRENCY_RE.match(currency.upper()):
            raise ValueError("currency must be a three-letter ISO 4217 code")
    except ValueError as exc:
        return None, Problem("invalid_order", f"The event was stored, but no transaction was created: {exc}.")
    return Order(order_id=order_id, amount=amount, currency=currency.upper(), timestamp=timestamp, items=items), None
