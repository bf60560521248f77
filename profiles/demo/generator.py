"""Deterministic demo data: a European/US shop's customers, their devices, browsing and purchases.

What it models, so the segments built on it behave like real ones:
- people with demographics (age, gender, city/country, income band, language, occupation) and
  technographics (1-3 devices, each with a type, OS and browser);
- identities and links that form one connected identity graph per person: anonymous ids per
  device, user ids for the ~55% who register (linked to every device they log in on), emails,
  phones, CRM ids for loyalty members, newsletter-only subscribers;
- sessions placed by weekday, time of day (lunch and evening peaks; desktop in office hours) and
  a seasonal curve (summer sale, back to school, the run-up to Black Friday, December);
- funnels: landing page -> product clicks/views driven by each person's category affinity ->
  add to cart -> checkout -> order, with ~70% cart abandonment; searches; email opens;
- transactions for web/app orders plus in-store and phone orders for loyalty members.

Same seed and same `end` give byte-identical data. Rows go in with COPY, one transaction for
the whole load (a failed load leaves nothing). The load is a two-stage pipeline: the main thread
builds a chunk of people while a writer thread streams the previous chunk to the server (the
database backend works on the second core); event rows, nine in ten of all rows, are written as
COPY text lines directly, without a per-value formatter.
"""

import bisect
import itertools
import math
import queue
import random
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
from django.db import connection, transaction
from faker import Faker
from faker.providers.person import Provider as PersonProvider

from cdp import crypto
from profiles.demo import catalog
from profiles.models import Identity, IdentityLink, Product, Source, Transaction
from profiles.partitions import event_partitions_ensure

HOURS_LIST = list(range(24))
# Share of sessions starting in each hour (local time): morning, lunch and evening peaks.
_MOBILE_HOURS = np.array([1, .5, .3, .2, .2, .4, 1, 2, 3, 3.2, 3.2, 3.6, 4.6, 4.4, 3.4, 3.2, 3.4, 4.2,
                          5.2, 6.2, 6.8, 6.4, 4.6, 2.4])
_DESKTOP_HOURS = np.array([.4, .2, .1, .1, .1, .2, .6, 1.6, 4, 5.6, 6, 5.8, 5, 5.6, 5.8, 5.6, 5, 4,
                           3, 3.2, 3.4, 3, 2, 1])
_WEEKDAY_FACTOR = [1.0, 0.95, 0.95, 1.0, 1.08, 1.22, 1.18]  # Monday .. Sunday
# (month, day, height, width in days) of seasonal peaks.
_SEASON_PEAKS = [(7, 5, 0.5, 7), (9, 5, 0.3, 8), (11, 27, 1.6, 6), (12, 14, 0.9, 8)]
_SENT_AFTER, _RECEIVED_AFTER = timedelta(milliseconds=40), timedelta(milliseconds=180)
_EVENTS_PER_SESSION = 7.0  # mean events per session incl. email opens, measured; sizes the sessions

PROFILE_COLUMNS = ("id", "created_at", "updated_at", "first_seen_at", "last_seen_at", "first_name",
                   "last_name", "birth_year", "age", "gender", "country", "city", "postcode", "income_band",
                   "language", "occupation", "last_device_type", "last_os", "last_browser", "traits")
IDENTITY_COLUMNS = ("id", "profile_id", "kind", "value_hash", "value", "source_id", "first_seen_at", "last_seen_at",
                    "origin_profile_id")
LINK_COLUMNS = ("id", "identity_a_id", "identity_b_id", "rule", "source_id", "first_seen_at", "last_seen_at",
                "is_active", "deactivation_reason")
EVENT_COLUMNS = ("timestamp", "original_timestamp", "sent_at", "received_at", "source_id", "profile_id",
                 "message_id", "type", "name", "category", "anonymous_id", "user_id", "properties", "traits",
                 "context", "extra")
TRANSACTION_COLUMNS = ("id", "source_id", "order_id", "profile_id", "amount", "currency", "channel", "store",
                       "timestamp", "created_at")
ITEM_COLUMNS = ("id", "transaction_id", "product_sku", "product_name", "category", "price", "quantity")

DEMO_SOURCES = [
    ("Demo web shop", Source.Kind.WEBSITE, False),
    ("Demo mobile app", Source.Kind.APP, False),
    ("Demo stores (POS)", Source.Kind.POS, False),
    ("Demo CRM", Source.Kind.CRM, True),
]


@dataclass
class DemoOptions:
    profiles: int = 20000
    days: int = 90
    seed: int = 42
    end: datetime | None = None  # exclusive end of the time window; default: now, to the hour
    events_per_profile: float = 20.0
    chunk_size: int = 2000


@dataclass
class DemoResult:
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0
    start: datetime | None = None
    end: datetime | None = None


@dataclass
class _Device:
    anonymous_id: str
    type: str
    os: str
    browser: str
    app: bool
    context: dict
    identity_id: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    login_session: int = 10**9  # index of the session on this device from which the user is logged in
    context_text: str = ""  # `context` as JSON, escaped for COPY text


@dataclass
class _Rows:
    profiles: list = field(default_factory=list)
    identities: list = field(default_factory=list)
    links: list = field(default_factory=list)
    events: list = field(default_factory=list)  # COPY text lines (str, newline-terminated)
    transactions: list = field(default_factory=list)
    items: list = field(default_factory=list)


class _Ids:
    """Explicit ids for rows other rows refer to, continuing after what the tables hold."""

    def __init__(self):
        with connection.cursor() as cursor:
            self.next = {}
            for table in ("profiles_identity", "profiles_identitylink", "profiles_transaction",
                          "profiles_transactionitem"):
                cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")  # noqa: S608 - our table names
                self.next[table] = cursor.fetchone()[0] + 1

    def take(self, table: str) -> int:
        value = self.next[table]
        self.next[table] = value + 1
        return value

    def advance_sequences(self, cursor) -> None:
        for table, value in self.next.items():
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [table, value])


def _season_weights(start: datetime, days: int) -> np.ndarray:
    weights = np.empty(days)
    for offset in range(days):
        day = (start + timedelta(days=offset)).date()
        factor = _WEEKDAY_FACTOR[day.weekday()]
        for month, dom, height, width in _SEASON_PEAKS:
            for year in (day.year - 1, day.year, day.year + 1):
                try:
                    peak = day.replace(year=year, month=month, day=dom)
                except ValueError:
                    continue
                factor += height * math.exp(-(((day - peak).days / width) ** 2) / 2)
        weights[offset] = factor * (0.85 + 0.3 * offset / max(days - 1, 1))  # gentle growth
    return weights / weights.sum()


def _copy_json(value) -> str:
    """`value` as JSON, escaped for COPY's text format. orjson writes control characters as
    escapes (a backslash and a letter) and no raw tab or newline, so doubling the backslashes
    is the whole escaping."""
    return orjson.dumps(value).decode().replace("\\", "\\\\")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower().replace(" ", "")


class _NamePool:
    """A locale's Faker name lists, drawn with the chunk's seeded Random: Faker re-weights a
    weighted list on every call, which was a tenth of the build. A locale whose provider draws
    last names its own way (pl_PL: by gender) keeps Faker's own method for them."""

    LISTS = ("first_names_female", "first_names_male", "first_names", "last_names")

    def __init__(self, faker: Faker):
        provider = faker.provider("faker.providers.person")
        self.lists = {}
        for attribute in self.LISTS:
            values = getattr(provider, attribute)
            weighted = isinstance(values, dict)
            self.lists[attribute] = (list(values), list(itertools.accumulate(values.values())) if weighted else None)
        self.faker_last_name = faker.last_name if type(provider).last_name is not PersonProvider.last_name else None

    def draw(self, rand: random.Random, attribute: str) -> str:
        names, cumulative = self.lists[attribute]
        return rand.choices(names, cum_weights=cumulative)[0] if cumulative else rand.choice(names)


class _ChunkBuilder:
    """Builds the rows of one chunk of profiles. All randomness comes from (seed, chunk index)."""

    def __init__(self, gen: "DemoGenerator", chunk_index: int, first_index: int, size: int):
        self.g = gen
        self.index0 = first_index
        self.size = size
        self.rng = np.random.default_rng([gen.options.seed, chunk_index])
        self.rand = random.Random(gen.options.seed * 1_000_003 + chunk_index)
        self.rows = _Rows()

    # -- per chunk, vectorised draws --------------------------------------------------------
    def build(self) -> _Rows:
        rng, n = self.rng, self.size
        g = self.g
        self.city_index = rng.choice(len(g.cities), n, p=g.city_weights)
        self.age = np.clip(rng.normal(39, 14, n), 16, 88).astype(int)
        self.gender = rng.choice(len(catalog.GENDERS), n, p=catalog.GENDER_WEIGHTS)
        income_score = rng.normal(0, 1, n) + np.clip((self.age - 22) / 25, -1, 1) * 0.8
        self.income = np.digitize(income_score, [-1.0, -0.3, 0.5, 1.2])
        self.registered = rng.random(n) < 0.55
        self.subscriber = np.where(self.registered, rng.random(n) < 0.7, rng.random(n) < 0.12)
        self.has_phone = self.registered & (rng.random(n) < 0.35)
        self.loyalty = self.registered & (rng.random(n) < 0.4)
        self.devices_count = np.where(self.registered, 1 + (rng.random(n) < 0.45) + (rng.random(n) < 0.12), 1)
        # Cumulative category affinity per person, for bisect (a numpy call per draw costs more).
        self.affinity_cum = np.cumsum(rng.dirichlet([0.35] * len(g.categories), n), axis=1).tolist()
        engagement = rng.lognormal(0, 0.75, n) * np.where(self.registered, 1.6, 0.6)
        mean_sessions = g.options.events_per_profile / _EVENTS_PER_SESSION
        self.sessions = 1 + rng.poisson(np.maximum(engagement / engagement.mean() * mean_sessions - 1, 0.05))
        self.profile_bytes = rng.bytes(16 * n)
        for i in range(n):
            self._profile(i)
        return self.rows

    # -- one person ---------------------------------------------------------------------------
    def _profile(self, i: int) -> None:
        g, rand = self.g, self.rand
        global_index = self.index0 + i
        profile_id = str(uuid.UUID(bytes=self.profile_bytes[16 * i:16 * i + 16], version=4))
        city = g.cities[self.city_index[i]]
        devices = [self._device(city, i) for _ in range(int(self.devices_count[i]))]
        sessions = self._session_times(i, devices)
        first_seen = sessions[0][0]
        registered = bool(self.registered[i])
        person = {"profile_id": profile_id, "city": city, "registered": registered, "index": i,
                  "user_id": f"u{100000 + global_index}" if registered else "", "last_event": first_seen}
        if registered:
            for device in devices:
                device.login_session = 0 if rand.random() < 0.7 else rand.randint(1, 3)
        gender = catalog.GENDERS[self.gender[i]]
        names = self._names(city, gender) if registered or self.subscriber[i] else (None, None)
        last_device = devices[0]
        per_device_counter = {id(d): 0 for d in devices}
        for when, device in sessions:
            counter = per_device_counter[id(device)]
            per_device_counter[id(device)] = counter + 1
            logged_in = registered and counter >= device.login_session
            self._session(person, device, when, logged_in, just_logged_in=logged_in and counter == device.login_session)
            device.first_seen = device.first_seen or when
            device.last_seen = when
            last_device = device
        self._emails(person, sessions, i)
        last_seen = person["last_event"]
        self._identities(person, devices, names, first_seen, last_seen, i)
        if self.loyalty[i]:
            self._store_orders(person, first_seen)
        traits = {"newsletter": bool(self.subscriber[i]), "loyalty_member": bool(self.loyalty[i]),
                  "registered": registered}
        age = int(self.age[i])
        occupation = ("retired" if age >= 67 else "student" if age < 24 and rand.random() < 0.6
                      else rand.choice(catalog.OCCUPATIONS))
        postcode = g.fakers[city.country].postcode() if registered else ""
        self.rows.profiles.append((
            profile_id, first_seen, last_seen, first_seen, last_seen,
            crypto.encrypt(names[0]) if names[0] else None, crypto.encrypt(names[1]) if names[1] else None,
            g.end.year - age, age, gender, city.country, city.name, postcode,
            catalog.INCOME_BANDS[self.income[i]], city.language, occupation,
            last_device.type, last_device.os, last_device.browser, orjson.dumps(traits).decode(),
        ))

    def _device(self, city, i) -> _Device:
        rand = self.rand
        device_type = rand.choices(catalog.DEVICE_TYPES, catalog.DEVICE_WEIGHTS)[0]
        os_names, os_weights = catalog.OS_BY_DEVICE[device_type]
        os_name = rand.choices(os_names, os_weights)[0]
        browsers, browser_weights = catalog.BROWSER_BY_OS[os_name]
        browser = rand.choices(browsers, browser_weights)[0]
        app = device_type == "mobile" and rand.random() < 0.35
        anonymous_id = str(uuid.UUID(int=rand.getrandbits(128), version=4))
        context = {
            "device": {"type": device_type}, "os": {"name": os_name}, "browser": {"name": browser},
            "locale": f"{city.language}-{city.country}", "timezone": city.timezone,
            "location": {"country": city.country, "city": city.name},
        }
        if app:
            context["app"] = {"name": "DemoShop", "version": "4.2.0"}
        return _Device(anonymous_id, device_type, os_name, browser, app, context, context_text=_copy_json(context))

    def _session_times(self, i, devices) -> list[tuple[datetime, _Device]]:
        g, rand = self.g, self.rand
        count = int(self.sessions[i])
        days = rand.choices(g.day_range, cum_weights=g.day_cum_weights, k=count)
        primary = devices[0]
        offset = g.utc_offsets[primary.context["timezone"]]
        sessions = []
        for day in days:
            device = primary if len(devices) == 1 or rand.random() < 0.65 else rand.choice(devices[1:])
            hours = g.desktop_hours if device.type == "desktop" else g.mobile_hours
            hour = rand.choices(HOURS_LIST, cum_weights=hours)[0]
            # Local hour -> UTC, so "after work" means the person's local evening.
            when = g.start + timedelta(days=day, hours=hour - offset, seconds=rand.randrange(3600))
            sessions.append((min(max(when, g.start), g.end - timedelta(hours=1)), device))
        sessions.sort(key=lambda item: item[0])
        return sessions

    # -- behaviour ----------------------------------------------------------------------------
    def _session(self, person, device, when, logged_in, just_logged_in) -> None:
        g, rand = self.g, self.rand
        affinity = self.affinity_cum[person["index"]]
        user_id = person["user_id"] if logged_in else ""
        source_id = g.source_ids["app"] if device.app else g.source_ids["web"]
        page_type = "screen" if device.app else "page"
        clock = [when]

        def emit(event_type, name, properties, extra_context=None, traits=None):
            self._event(person, device, clock[0], source_id, event_type, name, user_id, properties,
                        extra_context, traits)
            clock[0] += timedelta(seconds=rand.randint(8, 150))

        campaign = rand.choice(catalog.CAMPAIGNS) if rand.random() < 0.22 else None
        landing = {"path": "/", "title": "Home"}
        emit(page_type, "Home", {"path": landing["path"], "title": landing["title"]},
             {"page": landing, **({"campaign": campaign} if campaign else {})})
        if just_logged_in:
            emit("identify", "", {}, None, {"registered": True, "language": person["city"].language})
        category_index = bisect.bisect_left(affinity, rand.random())
        category = g.categories[min(category_index, len(g.categories) - 1)]
        if rand.random() < 0.28:
            emit("track", "search", {"query": rand.choice(catalog.SEARCH_TERMS[category]), "category": category})
        cart = []
        views = min(int(rand.expovariate(1 / 2.6)) + (1 if rand.random() < 0.8 else 0), 12)
        for _ in range(views):
            if rand.random() < 0.25:  # browse across categories now and then
                category = rand.choice(g.categories)
            product = rand.choice(g.products_by_category[category])
            item = {"product_id": product.sku, "sku": product.sku, "category": product.category,
                    "name": product.name, "price": product.price}
            if rand.random() < 0.55:
                emit("track", "product_clicked", {**item, "list": "category"})
            emit("track", "product_viewed", item,
                 {"page": {"path": f"/p/{product.sku}", "title": product.name}})
            if rand.random() < 0.16 and len(cart) < 4:
                quantity = 1 if rand.random() < 0.85 else 2
                cart.append((product, quantity))
                emit("track", "added_to_cart", {**item, "quantity": quantity})
        if cart and rand.random() < 0.5:
            total = round(sum(p.price * q for p, q in cart), 2)
            emit("track", "checkout_started", {"value": total, "currency": "EUR"})
            if rand.random() < 0.62:
                self._web_order(person, device, clock[0], source_id, cart, emit)

    def _web_order(self, person, device, when, source_id, cart, emit) -> None:
        g = self.g
        transaction_id = g.ids.take("profiles_transaction")
        order_id = f"W-{transaction_id}"
        total = round(sum(p.price * q for p, q in cart), 2)
        products = [{"product_id": p.sku, "sku": p.sku, "name": p.name, "category": p.category,
                     "price": p.price, "quantity": q} for p, q in cart]
        emit("track", "order_completed", {"order_id": order_id, "total": total, "revenue": total,
                                          "currency": "EUR", "products": products})
        channel = Transaction.Channel.APP if device.app else Transaction.Channel.WEB
        self.rows.transactions.append((transaction_id, source_id, order_id, person["profile_id"], total, "EUR",
                                       channel, "", when, when))
        for product, quantity in cart:
            self.rows.items.append((g.ids.take("profiles_transactionitem"), transaction_id, product.sku,
                                    product.name, product.category, product.price, quantity))

    def _store_orders(self, person, first_seen) -> None:
        g, rand = self.g, self.rand
        affinity = self.affinity_cum[person["index"]]
        city = person["city"]
        for _ in range(self.rng.poisson(1.6 * g.options.days / 90)):
            when = g.start + timedelta(days=rand.uniform(0, g.options.days - 1), hours=0)
            when = when.replace(hour=rand.randint(9, 19), minute=rand.randint(0, 59)) - timedelta(
                hours=g.utc_offsets[city.timezone])
            when = min(max(when, g.start), g.end - timedelta(hours=1))
            phone = rand.random() < 0.08
            transaction_id = g.ids.take("profiles_transaction")
            prefix = "TEL" if phone else "POS"
            lines = []
            for _ in range(1 + int(rand.expovariate(0.9))):
                category = g.categories[min(bisect.bisect_left(affinity, rand.random()), len(g.categories) - 1)]
                lines.append((rand.choice(g.products_by_category[category]), 1 + (rand.random() < 0.2)))
            total = round(sum(p.price * q for p, q in lines), 2)
            store = "" if phone else f"{_ascii(city.name)}-{1 + rand.randrange(catalog.STORES_BY_COUNTRY_LIMIT)}"
            channel = Transaction.Channel.PHONE if phone else Transaction.Channel.STORE
            source_id = g.source_ids["crm"] if phone else g.source_ids["pos"]
            self.rows.transactions.append((transaction_id, source_id, f"{prefix}-{transaction_id}",
                                           person["profile_id"], total, "EUR", channel, store, when, when))
            for product, quantity in lines:
                self.rows.items.append((g.ids.take("profiles_transactionitem"), transaction_id, product.sku,
                                        product.name, product.category, product.price, quantity))

    def _emails(self, person, sessions, i) -> None:
        """Newsletter opens: one campaign a week, ~25% opened, logged against the primary device."""
        if not self.subscriber[i]:
            return
        g, rand = self.g, self.rand
        device = sessions[0][1]
        start = sessions[0][0]
        for week in range(g.options.days // 7):
            sent = g.start + timedelta(days=7 * week + 2, hours=8)
            if sent < start or rand.random() > 0.25:
                continue
            opened = sent + timedelta(minutes=rand.randint(5, 2000))
            if opened >= g.end:
                continue
            self._event(person, device, opened, g.source_ids["web"], "track", "email_opened",
                        person["user_id"], {"campaign_id": f"nl-{week + 1:03d}", "subject": "This week's picks"},
                        None, None)

    def _event(self, person, device, when, source_id, event_type, name, user_id, properties, extra_context,
               traits) -> None:
        g = self.g
        context = _copy_json({**device.context, **extra_context}) if extra_context else device.context_text
        g.event_counter += 1
        person["last_event"] = max(person["last_event"], when)
        # EVENT_COLUMNS as one COPY text line (`when` is in UTC). Every text value here is ours: uuids, catalog names,
        # ids, ISO timestamps, and JSON escaped by _copy_json; category is empty, extra is {}.
        if when.microsecond:
            stamp = f"{when}\t{when.isoformat(timespec='milliseconds').replace('+00:00', 'Z')}\t" \
                    f"{when + _SENT_AFTER}\t{when + _RECEIVED_AFTER}"
        else:  # every demo moment is a whole second: format it once (4 datetime formats were a fifth of the load)
            second = when.isoformat(" ")[:19]
            stamp = f"{second}+00\t{second[:10]}T{second[11:]}.000Z\t{second}.040+00\t{second}.180+00"
        self.rows.events.append(
            f"{stamp}\t"
            f"{source_id}\t{person['profile_id']}\tdemo-{g.options.seed}-{g.event_counter}\t{event_type}\t{name}\t"
            f"\t{device.anonymous_id}\t{user_id}\t{_copy_json(properties)}\t"
            f"{_copy_json(traits) if traits else '{}'}\t{context}\t{{}}\n")

    # -- identity graph -----------------------------------------------------------------------
    def _names(self, city, gender):
        pool = self.g.name_pools[city.country]
        first = pool.draw(self.rand, {"female": "first_names_female", "male": "first_names_male"}.get(gender, "first_names"))
        return first, pool.faker_last_name() if pool.faker_last_name else pool.draw(self.rand, "last_names")

    def _identities(self, person, devices, names, first_seen, last_seen, i) -> None:
        g, rows = self.g, self.rows
        profile_id = person["profile_id"]
        web = g.source_ids["web"]

        def add(kind, value, source_id, first, last):
            identity_id = g.ids.take("profiles_identity")
            stored = crypto.encrypt(value) if kind in Identity.PERSONAL_KINDS else value
            rows.identities.append((identity_id, profile_id, kind, crypto.keyed_hash(kind, value), stored,
                                    source_id, first, last, profile_id))
            return identity_id

        def link(a, b, rule, source_id, when):
            low, high = sorted((a, b))
            rows.links.append((g.ids.take("profiles_identitylink"), low, high, rule, source_id, when, last_seen,
                               True, ""))

        for device in devices:
            device.identity_id = add(Identity.Kind.ANONYMOUS_ID, device.anonymous_id,
                                     g.source_ids["app"] if device.app else web,
                                     device.first_seen or first_seen, device.last_seen or last_seen)
        email_id = None
        if names[0]:
            local = f"{_ascii(names[0])}.{_ascii(names[1])}{self.index0 + i}"
            email = f"{local}@{catalog.EMAIL_DOMAINS[(self.index0 + i) % len(catalog.EMAIL_DOMAINS)]}"
            email_id = add(Identity.Kind.EMAIL, email, web, first_seen, last_seen)
        if person["registered"]:
            user_identity = add(Identity.Kind.USER_ID, person["user_id"], web, first_seen, last_seen)
            for device in devices:
                link(device.identity_id, user_identity, IdentityLink.Rule.SAME_MESSAGE,
                     g.source_ids["app"] if device.app else web, device.first_seen or first_seen)
            link(user_identity, email_id, IdentityLink.Rule.IDENTIFY_TRAITS, web, first_seen)
            if self.has_phone[i]:
                plan = catalog.PHONE_PLANS[person["city"].country]
                phone = f"{plan[0]}{((self.index0 + i) * 7919) % 10 ** plan[1]:0{plan[1]}d}"
                link(user_identity, add(Identity.Kind.PHONE, phone, web, first_seen, last_seen),
                     IdentityLink.Rule.IDENTIFY_TRAITS, web, first_seen)
            if self.loyalty[i]:
                crm = add(Identity.Kind.CRM_ID, f"C{7000000 + self.index0 + i}", g.source_ids["crm"], first_seen,
                          last_seen)
                link(crm, email_id, IdentityLink.Rule.CRM_ROW, g.source_ids["crm"], first_seen)
        elif email_id:
            link(devices[0].identity_id, email_id, IdentityLink.Rule.IDENTIFY_TRAITS, web, first_seen)


class DemoGenerator:
    def __init__(self, options: DemoOptions, progress: Callable[[int, int], None] | None = None):
        self.options = options
        self.progress = progress or (lambda done, events: None)
        self.end = options.end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.start = self.end - timedelta(days=options.days)
        self.cities = catalog.load_cities()
        populations = np.array([c.population for c in self.cities], dtype=float) ** 0.7
        self.city_weights = populations / populations.sum()
        self.day_range = list(range(options.days))
        self.day_cum_weights = list(np.cumsum(_season_weights(self.start, options.days)))
        self.mobile_hours = list(np.cumsum(_MOBILE_HOURS))
        self.desktop_hours = list(np.cumsum(_DESKTOP_HOURS))
        self.utc_offsets = self._utc_offsets()
        base_rng = np.random.default_rng([options.seed, 10**6])
        self.product_specs = catalog.build_products(base_rng)
        self.categories = list(catalog.CATEGORIES)
        self.products_by_category = {c: [p for p in self.product_specs if p.category == c] for c in self.categories}
        self.fakers = {}
        for country, locale in catalog.FAKER_LOCALES.items():
            faker = Faker(locale)
            faker.seed_instance(options.seed)
            self.fakers[country] = faker
        self.name_pools = {country: _NamePool(faker) for country, faker in self.fakers.items()}
        self.event_counter = 0

    def _utc_offsets(self) -> dict[str, float]:
        from zoneinfo import ZoneInfo

        middle = self.start + (self.end - self.start) / 2
        return {c.timezone: ZoneInfo(c.timezone).utcoffset(middle.replace(tzinfo=None)).total_seconds() / 3600
                for c in self.cities}

    def run(self) -> DemoResult:
        began = time.perf_counter()
        result = DemoResult(start=self.start, end=self.end)
        counts = dict.fromkeys(("profiles", "identities", "links", "events", "transactions", "items"), 0)
        event_partitions_ensure(start=self.start.date(), end=(self.end + timedelta(days=93)).date())
        with transaction.atomic():
            self._setup()
            self.ids = _Ids()
            with connection.cursor() as cursor:
                writer = _CopyWriter(cursor.cursor.connection)
                switch_interval = sys.getswitchinterval()
                # The writer needs the GIL back each time the socket drains; at the default 5 ms
                # switch interval it waited on the builder for a third of the load.
                sys.setswitchinterval(0.0005)
                try:
                    for done, rows in self._chunks():
                        writer.put(rows)
                        for key in counts:
                            counts[key] += len(getattr(rows, key))
                        self.progress(done, counts["events"])
                finally:
                    sys.setswitchinterval(switch_interval)
                    writer.close()  # raises what the writer hit: the atomic block rolls it all back
                self.ids.advance_sequences(cursor)
        with connection.cursor() as cursor:
            for table in ("profiles_profile", "profiles_identity", "profiles_identitylink", "profiles_event",
                          "profiles_transaction", "profiles_transactionitem"):
                cursor.execute(f"ANALYZE {table}")
        result.counts = counts
        result.seconds = time.perf_counter() - began
        return result

    def _chunks(self):
        """Yield (profiles done, rows) per chunk, in order."""
        for index, first in enumerate(range(0, self.options.profiles, self.options.chunk_size)):
            size = min(self.options.chunk_size, self.options.profiles - first)
            yield first + size, _ChunkBuilder(self, index, first, size).build()

    def _setup(self) -> None:
        self.source_ids = {}
        for (name, kind, authoritative), key in zip(DEMO_SOURCES, ("web", "app", "pos", "crm"), strict=True):
            source, _ = Source.objects.get_or_create(name=name, defaults={"kind": kind,
                                                                          "is_authoritative": authoritative})
            self.source_ids[key] = source.id
        existing = set(Product.objects.values_list("sku", flat=True))
        Product.objects.bulk_create([Product(sku=p.sku, name=p.name, category=p.category, price=p.price)
                                     for p in self.product_specs if p.sku not in existing])



class _CopyWriter:
    """Streams chunks to the server from a thread, in order, on the load's own connection (the
    main thread does not use it meanwhile). Sending blocks in libpq with the GIL released, so the
    builder keeps one core and the database backend the other. At most one chunk waits in the
    queue: memory stays at about three chunks whatever the size of the load."""

    def __init__(self, pg_connection):
        self.connection = pg_connection
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="demo-copy", daemon=True)
        self.thread.start()

    def put(self, rows: _Rows) -> None:
        if self.error is not None:
            raise RuntimeError("the demo data writer failed") from self.error
        self.queue.put(rows)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise RuntimeError("the demo data writer failed") from self.error

    def _run(self) -> None:
        with self.connection.cursor() as cursor:
            while (rows := self.queue.get()) is not None:
                if self.error is None:  # after a failure, only drain so that put() never blocks
                    try:
                        self._copy(cursor, rows)
                    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                        self.error = exc

    @staticmethod
    def _copy(cursor, rows: _Rows) -> None:
        plan = [("profiles_profile", PROFILE_COLUMNS, rows.profiles),
                ("profiles_identity", IDENTITY_COLUMNS, rows.identities),
                ("profiles_identitylink", LINK_COLUMNS, rows.links),
                ("profiles_transaction", TRANSACTION_COLUMNS, rows.transactions),
                ("profiles_transactionitem", ITEM_COLUMNS, rows.items)]
        for table, columns, data in plan:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # noqa: S608 - constants
                for row in data:
                    copy.write_row(row)
        with cursor.copy(f"COPY profiles_event ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            copy.write("".join(rows.events).encode())


def demo_generate(*, options: DemoOptions, progress=None) -> DemoResult:
    """Load a deterministic demo data set (see module docstring); returns counts and duration."""
    return DemoGenerator(options, progress).run()
