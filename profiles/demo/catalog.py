"""Fixed vocabularies of the demo shop: categories, products, devices, occupations, cities."""

import csv
from dataclasses import dataclass
from pathlib import Path

CITIES_CSV = Path(__file__).resolve().parent.parent / "data" / "cities.csv"

# category -> (product nouns, median price in EUR)
CATEGORIES = {
    "shoes": (["Runner", "Trail Shoe", "Sneaker", "Loafer", "Boot", "Sandal"], 89),
    "apparel": (["T-Shirt", "Hoodie", "Jacket", "Jeans", "Dress", "Sweater"], 49),
    "electronics": (["Headphones", "Smartwatch", "Speaker", "E-Reader", "Camera", "Charger"], 149),
    "home": (["Lamp", "Cushion", "Rug", "Vase", "Throw", "Clock"], 39),
    "kitchen": (["Knife Set", "Pan", "Kettle", "Espresso Maker", "Blender", "Toaster"], 69),
    "beauty": (["Serum", "Lipstick", "Perfume", "Face Cream", "Shampoo", "Palette"], 29),
    "sports": (["Yoga Mat", "Dumbbells", "Bike Light", "Water Bottle", "Tennis Racket", "Backpack"], 45),
    "toys": (["Puzzle", "Building Set", "Plush Bear", "Board Game", "Kite", "Train Set"], 25),
    "books": (["Novel", "Cookbook", "Travel Guide", "Biography", "Comic", "Atlas"], 18),
    "garden": (["Planter", "Hose", "Pruner", "Bird Feeder", "Seed Kit", "Lantern"], 35),
    "pets": (["Dog Bed", "Cat Tree", "Leash", "Feeder", "Chew Toy", "Carrier"], 32),
    "jewellery": (["Ring", "Necklace", "Bracelet", "Earrings", "Watch", "Brooch"], 119),
}
ADJECTIVES = ["Classic", "Urban", "Nordic", "Eco", "Pro", "Lite", "Vintage", "Aero", "Solid", "Cozy"]
SEARCH_TERMS = {
    "shoes": ["running shoes", "waterproof boots", "white sneakers"],
    "apparel": ["rain jacket", "organic t-shirt", "winter hoodie"],
    "electronics": ["noise cancelling", "smartwatch", "bluetooth speaker"],
    "home": ["floor lamp", "wool rug", "cushion covers"],
    "kitchen": ["espresso", "chef knife", "cast iron pan"],
    "beauty": ["vitamin c serum", "vegan lipstick", "perfume gift"],
    "sports": ["yoga mat", "adjustable dumbbells", "hiking backpack"],
    "toys": ["lego", "puzzle 1000", "board game family"],
    "books": ["crime novel", "vegan cookbook", "travel guide italy"],
    "garden": ["self watering planter", "bird feeder", "solar lantern"],
    "pets": ["orthopedic dog bed", "cat tree", "dog leash"],
    "jewellery": ["silver ring", "gold necklace", "gift for her"],
}
CAMPAIGNS = [
    {"source": "google", "medium": "cpc", "name": "brand_search"},
    {"source": "newsletter", "medium": "email", "name": "weekly_deals"},
    {"source": "instagram", "medium": "social", "name": "autumn_collection"},
    {"source": "facebook", "medium": "paid_social", "name": "retargeting"},
    {"source": "partner", "medium": "affiliate", "name": "deal_sites"},
]
DEVICE_TYPES = ["mobile", "desktop", "tablet"]
DEVICE_WEIGHTS = [0.58, 0.35, 0.07]
OS_BY_DEVICE = {
    "mobile": (["iOS", "Android"], [0.45, 0.55]),
    "desktop": (["Windows", "macOS", "Linux"], [0.62, 0.33, 0.05]),
    "tablet": (["iPadOS", "Android"], [0.65, 0.35]),
}
BROWSER_BY_OS = {
    "iOS": (["Safari", "Chrome"], [0.8, 0.2]),
    "iPadOS": (["Safari", "Chrome"], [0.85, 0.15]),
    "Android": (["Chrome", "Samsung Internet", "Firefox"], [0.75, 0.2, 0.05]),
    "Windows": (["Chrome", "Edge", "Firefox"], [0.65, 0.25, 0.10]),
    "macOS": (["Safari", "Chrome", "Firefox"], [0.5, 0.42, 0.08]),
    "Linux": (["Firefox", "Chrome"], [0.6, 0.4]),
}
GENDERS = ["female", "male", "non_binary", ""]
GENDER_WEIGHTS = [0.49, 0.48, 0.015, 0.015]
INCOME_BANDS = ["low", "lower_middle", "middle", "upper_middle", "high"]
OCCUPATIONS = ["student", "engineer", "teacher", "nurse", "designer", "sales", "manager", "developer",
               "craftsperson", "self_employed", "civil_servant", "consultant"]
STORES_BY_COUNTRY_LIMIT = 2
FAKER_LOCALES = {"DE": "de_DE", "AT": "de_AT", "CH": "de_CH", "FR": "fr_FR", "BE": "fr_BE", "GB": "en_GB",
                 "IE": "en_IE", "US": "en_US", "ES": "es_ES", "IT": "it_IT", "NL": "nl_NL", "DK": "da_DK",
                 "SE": "sv_SE", "NO": "no_NO", "PL": "pl_PL", "PT": "pt_PT"}
# Mobile prefixes and subscriber-number lengths per country: demo phones are valid E.164.
# Subscriber numbers are derived from the person's index (a bijection mod 10^length), so they
# never collide below 10 million profiles.
PHONE_PLANS = {"DE": ("+49151", 8), "AT": ("+43664", 7), "CH": ("+417", 8), "FR": ("+336", 8),
               "BE": ("+324", 8), "GB": ("+447", 9), "IE": ("+3538", 8), "US": ("+1206", 7),
               "ES": ("+346", 8), "IT": ("+39347", 7), "NL": ("+316", 8), "DK": ("+452", 7),
               "SE": ("+467", 8), "NO": ("+474", 7), "PL": ("+485", 8), "PT": ("+3519", 8)}
EMAIL_DOMAINS = ["example.com", "example.org", "example.net", "mail.example", "post.example"]


@dataclass(frozen=True)
class City:
    name: str
    country: str
    population: int
    size: str
    timezone: str
    language: str


def load_cities() -> list[City]:
    with open(CITIES_CSV, newline="", encoding="utf-8") as handle:
        return [City(r["city"], r["country"], int(r["population"]), r["size"], r["timezone"], r["language"])
                for r in csv.DictReader(handle)]


@dataclass(frozen=True)
class ProductSpec:
    sku: str
    name: str
    category: str
    price: float


def build_products(rng) -> list[ProductSpec]:
    """Six nouns x five adjectives per category = 360 products with log-normal prices."""
    products = []
    for category, (nouns, median) in CATEGORIES.items():
        for noun_index, noun in enumerate(nouns):
            for adjective_index in range(5):
                adjective = ADJECTIVES[(noun_index + adjective_index * 3) % len(ADJECTIVES)]
                price = max(round(float(median * rng.lognormal(0, 0.35))) - 0.01, 2.99)
                sku = f"sku-{len(products) + 1}"
                products.append(ProductSpec(sku, f"{adjective} {noun}", category, price))
    return products
