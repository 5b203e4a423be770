"""The labelled set of bench/semantic_cache.py, generated deterministically (no data files).

Six task types, each its own scope (its own system prompt): support, arithmetic, dates and
scheduling, translation, product questions, geography. Each has intents with slots; a
*meaning* is an intent with its slot values. For every cached meaning the set holds
paraphrases (same meaning, other words: a hit is right) and near-misses that differ in one
number, negation, named entity or date (a hit is wrong). The answer of a meaning is a text
that carries its slot values, as a model's answer would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

COUNTRIES = [
    "France",
    "Spain",
    "Italy",
    "Germany",
    "Canada",
    "Mexico",
    "Brazil",
    "Japan",
    "Kenya",
    "Norway",
    "Peru",
    "Chile",
]
LANGS = ["French", "German", "Spanish", "Italian", "Portuguese", "Dutch", "Swedish", "Japanese"]
PHRASES = [
    "good morning", "thank you very much", "where is the station", "I am lost",
    "see you tomorrow", "the bill please", "how much is this", "happy birthday",
    "good night", "nice to meet you", "I love this city", "open the window",
]  # fmt: skip
PRODUCTS = [
    "Aero",
    "Falcon",
    "Nimbus",
    "Orion",
    "Vega",
    "Atlas",
    "Zephyr",
    "Titan",
    "Nova",
    "Comet",
    "Pulsar",
    "Quasar",
]
FEATURES = ["free shipping", "priority support", "offline mode", "team accounts", "API access"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


@dataclass(frozen=True)
class Intent:
    base: str
    paraphrases: tuple[str, ...]
    answer: str
    slots: dict[str, list]  # slot -> values; near-misses swap one value
    negated: str | None = None  # the base with a negation (a near-miss)


TASKS: dict[str, tuple[str, list[Intent]]] = {
    "support": (
        "You are a support agent for an online shop. Answer briefly.",
        [
            Intent(
                "What is the refund policy for order {n}?",
                (
                    "Can I get a refund for order {n}?",
                    "How do refunds work for order {n}?",
                    "Explain the refund rules that apply to order {n}.",
                ),
                "Order {n} can be refunded within 30 days of delivery.",
                {"n": list(range(1000, 9999, 37))},
            ),
            Intent(
                "How long does shipping to {country} take?",
                (
                    "How many days does delivery to {country} take?",
                    "What is the delivery time for shipping to {country}?",
                    "When will a parcel sent to {country} arrive?",
                ),
                "Shipping to {country} takes 5-7 business days.",
                {"country": COUNTRIES},
            ),
            Intent(
                "Which plans include {feature}?",
                (
                    "Which subscription plans come with {feature}?",
                    "What plans have {feature}?",
                    "Tell me the plans that include {feature}.",
                ),
                "The Plus and Pro plans include {feature}.",
                {"feature": FEATURES},
                negated="Which plans do not include {feature}?",
            ),
        ],
    ),
    "arithmetic": (
        "You are a calculator. Give the number only.",
        [
            Intent(
                "What is {a} percent of {b}?",
                (
                    "Compute {a}% of {b}.",
                    "Calculate {a} percent of {b}.",
                    "How much is {a} percent of {b}?",
                ),
                "{a} percent of {b} is {a}*{b}/100.",
                {"a": [5, 10, 15, 20, 25, 30, 40], "b": list(range(120, 900, 40))},
            ),
            Intent(
                "Convert {m} miles to kilometers.",
                (
                    "How many kilometers is {m} miles?",
                    "What is {m} miles in kilometers?",
                    "Express {m} miles in kilometers.",
                ),
                "{m} miles is {m}*1.609 kilometers.",
                {"m": list(range(3, 240, 7))},
            ),
        ],
    ),
    "dates": (
        "You schedule meetings for a small team.",
        [
            Intent(
                "Book a meeting room for {day} at {h} pm.",
                (
                    "Reserve a meeting room on {day} at {h} pm.",
                    "Please book a meeting room for {day}, {h} pm.",
                    "I need a meeting room on {day} at {h} pm.",
                ),
                "Room 2 is booked for {day} at {h} pm.",
                {"day": DAYS, "h": [1, 2, 3, 4, 5]},
            ),
            Intent(
                "What were total sales in {month} 2025?",
                (
                    "Tell me total sales for {month} 2025.",
                    "How much did we sell in {month} 2025?",
                    "What was the sales total for {month} 2025?",
                ),
                "Sales in {month} 2025 were recorded in the ledger.",
                {"month": MONTHS},
            ),
        ],
    ),
    "translation": (
        "You translate short phrases. Reply with the translation only.",
        [
            Intent(
                "Translate '{phrase}' into {lang}.",
                (
                    "How do you say '{phrase}' in {lang}?",
                    "What is '{phrase}' in {lang}?",
                    "Give me the {lang} for '{phrase}'.",
                ),
                "'{phrase}' in {lang}: [{lang} text of '{phrase}']",
                {"phrase": PHRASES, "lang": LANGS},
            ),
        ],
    ),
    "products": (
        "You answer questions about our product range.",
        [
            Intent(
                "Is the {product} waterproof?",
                (
                    "Is the {product} water resistant?",
                    "Can the {product} be used in the rain?",
                    "Does the {product} resist water?",
                ),
                "Yes, the {product} is waterproof to 30 meters.",
                {"product": PRODUCTS},
                negated="Is the {product} not waterproof?",
            ),
            Intent(
                "Does the {product} support {feature}?",
                (
                    "Can I use {feature} with the {product}?",
                    "Is {feature} available on the {product}?",
                    "Does {feature} work on the {product}?",
                ),
                "The {product} supports {feature}.",
                {"product": PRODUCTS, "feature": FEATURES},
                negated="Does the {product} not support {feature}?",
            ),
        ],
    ),
    "geography": (
        "You answer geography questions in one sentence.",
        [
            Intent(
                "What is the capital of {country}?",
                (
                    "Name the capital city of {country}.",
                    "Which city is the capital of {country}?",
                    "Tell me the capital of {country}.",
                ),
                "The capital of {country} is on record.",
                {"country": COUNTRIES},
            ),
        ],
    ),
}


@dataclass(frozen=True)
class Item:
    task: str
    system: str
    text: str
    meaning: str  # same meaning <=> same answer
    answer: str
    kind: str  # base | paraphrase | near_number | near_entity | near_date | near_negation | repeat


def _fill(template: str, values: dict) -> str:
    return template.format(**values).replace("_", " ")


def _count(intent: Intent) -> int:
    n = 1
    for values in intent.slots.values():
        n *= len(values)
    return n


def _near_kind(slot: str, value: object) -> str:
    if isinstance(value, int):
        return "near_number"
    return "near_date" if value in DAYS or value in MONTHS else "near_entity"


def build(meanings_per_task: int = 60, seed: int = 19) -> tuple[list[Item], list[Item]]:
    """(cached base items, queries): per cached meaning up to three paraphrases, one
    near-miss (a slot value no cached meaning has, or the negation) and sometimes a repeat."""
    rng = random.Random(seed)
    cached: list[Item] = []
    queries: list[Item] = []
    for task, (system, intents) in TASKS.items():
        seen: set[str] = set()
        picks: list[tuple[Intent, dict]] = []
        possible = sum(_count(i) for i in intents)
        wanted = min(meanings_per_task, possible // 2)  # leave meanings for the near-misses
        for _ in range(meanings_per_task * 20):
            if len(picks) == wanted:
                break
            intent = rng.choice(intents)
            values = {s: rng.choice(v) for s, v in intent.slots.items()}
            meaning = intent.base + repr(sorted(values.items()))
            if meaning not in seen:
                seen.add(meaning)
                picks.append((intent, values))
        taken = seen
        for intent, values in picks:
            meaning = intent.base + repr(sorted(values.items()))
            answer = _fill(intent.answer, values)
            base = Item(task, system, _fill(intent.base, values), meaning, answer, "base")
            cached.append(base)
            for p in rng.sample(intent.paraphrases, k=min(3, len(intent.paraphrases))):
                queries.append(Item(task, system, _fill(p, values), meaning, answer, "paraphrase"))
            if rng.random() < 0.1:
                queries.append(Item(task, system, base.text, meaning, answer, "repeat"))
            queries.append(_near_miss(intent, values, taken, rng, task, system))
    rng.shuffle(queries)
    return cached, queries


def _near_miss(intent: Intent, values: dict, taken: set[str], rng: random.Random,
               task: str, system: str) -> Item:  # fmt: skip
    if intent.negated is not None and rng.random() < 0.5:
        text = _fill(intent.negated, values)
        return Item(task, system, text, "not:" + text, "No: " + text, "near_negation")
    for _ in range(50):
        slot = rng.choice(list(intent.slots))
        other = {**values, slot: rng.choice(intent.slots[slot])}
        meaning = intent.base + repr(sorted(other.items()))
        if other != values and meaning not in taken:
            # the template's own words, one slot changed: the nearest kind of miss
            text = _fill(intent.base, other)
            return Item(task, system, text, meaning, _fill(intent.answer, other),
                        _near_kind(slot, other[slot]))  # fmt: skip
    text = _fill(intent.negated or ("Not: " + intent.base), values)
    return Item(task, system, text, "not:" + text, "No: " + text, "near_negation")
