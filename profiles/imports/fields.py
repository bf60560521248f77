"""What an import can fill: the target fields of each kind of file, their types and the header
spellings that auto-match them ("E-mail", "email_address", "Customer ID", ...)."""

import re
from dataclasses import dataclass

CUSTOM_PREFIX = "trait:"
IGNORE = ""

CRM = "crm"
TRANSACTIONS = "transactions"
ENRICHMENT = "enrichment"
KINDS = (CRM, TRANSACTIONS, ENRICHMENT)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    type: str  # id, email, phone, sha256, text, category, date, datetime, amount, int, currency, country, bool, purpose
    aliases: tuple[str, ...] = ()
    max_length: int = 200


IDENTIFIERS = {
    "customer_id": Field("customer_id", "Customer id (CRM id)", "id",
                         ("customer id", "customer", "customer no", "customer number", "client id", "crm id",
                          "member id", "loyalty id", "account id", "kunde", "kundennummer", "id client", "customerid")),
    "email": Field("email", "Email", "email", ("e-mail", "email address", "e-mail address", "mail", "email_address")),
    "phone": Field("phone", "Phone", "phone", ("phone number", "telephone", "tel", "mobile", "mobile phone", "cell",
                                               "telefon", "phone_number")),
    "user_id": Field("user_id", "User id (website login)", "id", ("userid", "login", "username", "web user id")),
}
EMAIL_SHA256 = Field("email_sha256", "Email SHA-256", "sha256",
                     ("email sha256", "sha256 email", "hashed email", "email hash", "email_sha256", "sha256"))

PROFILE_TRAITS = {
    "first_name": Field("first_name", "First name", "text", ("firstname", "given name", "forename", "vorname", "prenom")),
    "last_name": Field("last_name", "Last name", "text", ("lastname", "surname", "family name", "nachname", "nom")),
    "birth_date": Field("birth_date", "Birth date", "date", ("date of birth", "dob", "birthday", "birthdate",
                                                             "geburtsdatum", "date de naissance")),
    "age": Field("age", "Age", "int", ("alter", "age years")),
    "gender": Field("gender", "Gender", "category", ("sex", "geschlecht", "sexe")),
    "city": Field("city", "City", "text", ("town", "stadt", "ville", "ort")),
    "postcode": Field("postcode", "Postcode", "text", ("zip", "zip code", "postal code", "plz", "postleitzahl",
                                                      "code postal"), max_length=20),
    "country": Field("country", "Country (ISO alpha-2)", "country", ("country code", "land", "pays")),
    "income_band": Field("income_band", "Income band", "category", ("income", "income group", "income bracket")),
    "occupation": Field("occupation", "Occupation", "text", ("job", "profession", "job title", "beruf"), max_length=80),
    "language": Field("language", "Language", "category", ("lang", "locale", "preferred language", "sprache"),
                      max_length=10),
}
CONSENT = {
    "consent_purpose": Field("consent_purpose", "Consent purpose", "purpose", ("purpose", "consent type")),
    "consent_granted": Field("consent_granted", "Consent granted", "bool",
                             ("consent", "opt in", "optin", "granted", "subscribed", "consent given")),
    "consent_date": Field("consent_date", "Consent date", "datetime", ("consent at", "opt in date", "consented at",
                                                                       "consent timestamp")),
}
TRANSACTION_FIELDS = {
    "order_id": Field("order_id", "Order id", "id", ("order", "order no", "order number", "transaction id",
                                                     "receipt", "receipt no", "invoice", "invoice number",
                                                     "bestellnummer"), max_length=100),
    "timestamp": Field("timestamp", "Date / time", "datetime", ("date", "order date", "purchase date", "datetime", "ordered at", "order time", "purchased at", "sold at",
                                                                "time", "transaction date", "created at", "datum")),
    "amount": Field("amount", "Amount", "amount", ("total", "value", "revenue", "price", "order total", "sales",
                                                   "betrag", "montant", "line total")),
    "currency": Field("currency", "Currency", "currency", ("currency code", "ccy", "waehrung", "währung", "devise")),
    "quantity": Field("quantity", "Quantity", "int", ("qty", "units", "menge", "quantite", "count")),
    "product": Field("product", "Product name", "text", ("product name", "item", "item name", "article",
                                                         "description", "artikel")),
    "sku": Field("sku", "Product SKU", "text", ("product id", "product code", "item id", "article number", "ean"),
                 max_length=64),
    "category": Field("category", "Category", "text", ("product category", "department", "kategorie"), max_length=80),
    "channel": Field("channel", "Channel", "category", ("sales channel", "kanal")),
    "store": Field("store", "Store", "text", ("shop", "store name", "branch", "location", "filiale"), max_length=80),
}


def fields_for(kind: str) -> dict[str, Field]:
    """Target fields of a kind of file, in the order the mapping screen lists them."""
    if kind == CRM:
        return {**IDENTIFIERS, **PROFILE_TRAITS, **CONSENT}
    if kind == TRANSACTIONS:
        return {**TRANSACTION_FIELDS, **IDENTIFIERS}
    if kind == ENRICHMENT:
        return {"email": IDENTIFIERS["email"], "email_sha256": EMAIL_SHA256,
                "customer_id": IDENTIFIERS["customer_id"], **PROFILE_TRAITS}
    raise ValueError(f"unknown import kind {kind!r}")


def identifier_fields(kind: str) -> tuple[str, ...]:
    """Fields of which a row needs at least one (its customer)."""
    if kind == ENRICHMENT:
        return ("customer_id", "email", "email_sha256")
    return tuple(IDENTIFIERS)


def required_fields(kind: str) -> tuple[str, ...]:
    return ("order_id", "timestamp", "amount") if kind == TRANSACTIONS else ()


def field_label(kind: str, target: str) -> str:
    if target.startswith(CUSTOM_PREFIX):
        return f"Custom trait “{target[len(CUSTOM_PREFIX):]}”"
    spec = fields_for(kind).get(target)
    return spec.label if spec else target


_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_TRAIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")


def header_key(header: str) -> str:
    """'E-Mail Address ' -> 'emailaddress': case, spaces and punctuation do not matter."""
    return _NON_ALNUM.sub("", str(header).strip().lower())


def trait_name(header: str) -> str:
    """A custom trait key derived from a header: 'Favourite colour' -> 'favourite_colour'."""
    name = _NON_ALNUM.sub("_", str(header).strip().lower()).strip("_")
    if not name or not name[0].isalpha():
        name = f"col_{name}".rstrip("_")
    return name[:60]


def valid_trait_name(name: str) -> bool:
    return bool(_TRAIT_NAME.match(name))


def mapping_suggest(*, kind: str, headers: list[str]) -> dict[str, str]:
    """Auto-match headers to target fields (exact name, then aliases); unmatched headers map to ''."""
    lookup: dict[str, str] = {}
    for name, spec in fields_for(kind).items():
        for spelling in (name, spec.label, *spec.aliases):
            lookup.setdefault(header_key(spelling), name)
    result, taken = {}, set()
    for header in headers:
        target = lookup.get(header_key(header), IGNORE)
        if target and target in taken:
            target = IGNORE  # two columns cannot feed one field; the first wins
        if target:
            taken.add(target)
        result[header] = target
    return result
