"""Words the world is written in: a category taxonomy with product lines, and brand-like names.

Real-sounding names make the generated text (queries, URLs, corpus) read like commerce data, so a
tokenizer and a language model see the structure a real one would; the numbers stay synthetic.
"""

from __future__ import annotations

import numpy as np

# top category -> (leaf nouns, product-line modifiers). Product line = "<modifier> <leaf noun>".
TAXONOMY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Fashion": (("dresses", "sneakers", "handbags", "jackets", "jeans", "sunglasses"),
                ("vintage", "summer", "designer", "casual", "eco")),
    "Home Decor": (("rugs", "wall art", "candles", "throw pillows", "mirrors", "vases"),
                   ("boho", "minimalist", "farmhouse", "modern", "handmade")),
    "Beauty": (("lipstick", "serums", "face masks", "perfume", "nail polish", "shampoo"),
               ("vegan", "matte", "hydrating", "organic", "luxury")),
    "Electronics": (("headphones", "smartwatches", "speakers", "chargers", "cameras", "keyboards"),
                    ("wireless", "portable", "gaming", "noise-cancelling", "compact")),
    "Sports & Outdoors": (("running shoes", "yoga mats", "tents", "bikes", "dumbbells", "backpacks"),
                          ("trail", "lightweight", "pro", "waterproof", "beginner")),
    "Kitchen & Dining": (("cookware", "knives", "coffee makers", "dinnerware", "blenders", "bakeware"),
                         ("cast iron", "stainless", "ceramic", "nonstick", "artisan")),
    "Baby & Kids": (("strollers", "car seats", "onesies", "cribs", "baby monitors", "diaper bags"),
                    ("convertible", "organic cotton", "travel", "smart", "foldable")),
    "Pets": (("dog food", "cat trees", "leashes", "pet beds", "aquariums", "chew toys"),
             ("grain-free", "orthopedic", "durable", "natural", "deluxe")),
    "Garden": (("planters", "seeds", "garden tools", "grills", "patio chairs", "hoses"),
               ("raised", "heirloom", "ergonomic", "outdoor", "solar")),
    "Health & Wellness": (("vitamins", "protein powder", "massage guns", "sleep aids", "teas", "yoga blocks"),
                          ("plant-based", "daily", "calming", "herbal", "sugar-free")),
    "Travel": (("luggage", "travel pillows", "packing cubes", "passport wallets", "duffel bags", "adapters"),
               ("carry-on", "hardshell", "compact", "rfid", "weekender")),
    "Toys & Games": (("board games", "puzzles", "building blocks", "dolls", "rc cars", "plush toys"),
                     ("educational", "classic", "family", "collectible", "stem")),
    "Furniture": (("sofas", "desks", "bookshelves", "bed frames", "dining tables", "armchairs"),
                  ("mid-century", "modular", "solid wood", "velvet", "space-saving")),
    "Jewelry": (("necklaces", "rings", "earrings", "bracelets", "watches", "anklets"),
                ("gold", "silver", "personalized", "dainty", "statement")),
    "Food & Drink": (("coffee beans", "snacks", "wine", "chocolate", "olive oil", "hot sauce"),
                     ("single-origin", "gourmet", "keto", "small-batch", "imported")),
    "Crafts": (("yarn", "paint sets", "sewing machines", "stickers", "beads", "canvas"),
               ("merino", "watercolor", "beginner", "holographic", "bulk")),
    "Office": (("notebooks", "pens", "office chairs", "planners", "monitors", "desk lamps"),
               ("dotted", "gel", "ergonomic", "undated", "led")),
    "Automotive": (("car covers", "dash cams", "floor mats", "tire inflators", "seat covers", "car vacuums"),
                   ("all-weather", "4k", "custom-fit", "cordless", "leather")),
    "Books": (("novels", "cookbooks", "journals", "comics", "art books", "audiobooks"),
              ("bestselling", "illustrated", "signed", "hardcover", "indie")),
    "Music": (("guitars", "vinyl records", "ukuleles", "microphones", "drum kits", "amplifiers"),
              ("acoustic", "limited edition", "usb", "electric", "starter")),
}

_ONSETS = ("b", "br", "c", "d", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pr", "qu",
           "r", "s", "st", "t", "tr", "v", "w", "z", "sh", "ch", "th")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
_CODAS = ("", "n", "r", "l", "x", "s", "m", "t", "nd", "rk", "ll", "ve")
COMPANY_SUFFIXES = ("Co.", "Group", "Brands", "Goods", "Outfitters", "Labs", "Supply", "Collective",
                    "Market", "Studio", "House", "Works")
DOMAIN_SUFFIXES = (".com", ".shop", ".co")


def category_names(n_top: int, leaves_per_top: int) -> tuple[list[str], list[list[str]]]:
    """Top-category names and, per top, its leaf names (synthetic beyond the built-in list)."""
    tops, leaves = [], []
    real = list(TAXONOMY.items())
    for t in range(n_top):
        if t < len(real):
            name, (nouns, _) = real[t]
        else:
            name, nouns = f"Department {t + 1}", ()
        tops.append(name)
        leaves.append([nouns[j] if j < len(nouns) else f"{name.lower()} goods {j + 1}"
                       for j in range(leaves_per_top)])
    return tops, leaves


def product_line_names(top_index: int, leaf_name: str, n_lines: int) -> list[str]:
    """Product lines of a leaf: modifier + leaf noun."""
    real = list(TAXONOMY.values())
    modifiers = real[top_index][1] if top_index < len(real) else ()
    return [f"{modifiers[j]} {leaf_name}" if j < len(modifiers) else f"{leaf_name} line {j + 1}"
            for j in range(n_lines)]


def _syllable(rng: np.random.Generator, n: int) -> np.ndarray:
    onset = np.asarray(_ONSETS)[rng.integers(0, len(_ONSETS), n)]
    nucleus = np.asarray(_NUCLEI)[rng.integers(0, len(_NUCLEI), n)]
    return np.char.add(onset, nucleus)


def unique_names(rng: np.random.Generator, n: int, exclude: set[str] | None = None) -> list[str]:
    """`n` distinct pronounceable capitalised names (2–3 syllables), none in `exclude`."""
    taken = set(exclude or ())
    names: list[str] = []
    while len(names) < n:
        m = 2 * (n - len(names)) + 16
        three = rng.random(m) < 0.5
        word = np.char.add(_syllable(rng, m), _syllable(rng, m))
        word = np.where(three, np.char.add(word, _syllable(rng, m)), word)
        coda = np.asarray(_CODAS)[rng.integers(0, len(_CODAS), m)]
        word = np.char.add(word, coda)
        for w in word.tolist():
            name = w.capitalize()
            if name not in taken:
                taken.add(name)
                names.append(name)
                if len(names) == n:
                    break
    return names
