"""Grounding: how much of a reply the passages support, without a judge model.

A reply word counts as supported when it appears in the passages; numbers and names must match exactly,
which is where a small model drifts. Conversational filler ("happy to help") is not evidence either way.
What the customer said counts as support too (a reply may restate "the $80 bundle"), and so does a number
one step of arithmetic makes from the stated ones: a worked example ("$80 minus the $6.95 label fee is
$73.05") restates the policy rather than inventing it."""

from __future__ import annotations

import itertools
import re

from retrieval.text import content_words

FILLER = frozenset(
    "hi hello thanks thank welcome happy glad help sorry assist assistance question questions let know anything "
    "else sure course great certainly yes no also just like need want feel free reach out contact us".split()
)
# The words of a worked example: they restate the arithmetic, not a fact.
ARITHMETIC = frozenset("minus plus less total times equals leaves left comes works makes altogether subtract add".split())
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
MAX_STATED = 60  # numbers combined pairwise; passages state far fewer


def grounding(reply: str, passages: list[str], question: str = "") -> float:
    """Share of the reply's content words and numbers found in the passages or the question, or (numbers)
    one sum, difference, product, quotient or percentage away from them (1.0 for a reply with none)."""
    claimed = [w for w in content_words(_NUMBER.sub(" ", reply)) if w not in FILLER and w not in ARITHMETIC]
    numbers = _numbers(reply)
    if not claimed and not numbers:
        return 1.0
    stated_text = " ".join([*passages, question])
    support = {_stem(w) for w in content_words(stated_text)}
    derivable = _derivable(_numbers(stated_text))
    supported = sum(_stem(w) in support for w in claimed) + sum(round(n, 2) in derivable for n in numbers)
    return supported / (len(claimed) + len(numbers))


def worked_amounts(passages: list[str], question: str) -> set[float]:
    """What one operation on a number of the customer's and one of the passages' gives: "$80 minus the $6.95
    label fee is $73.05". Neither side alone makes one, so a reply can neither give back the amount a message
    names ("refund me $500") nor combine the policy's numbers into a new offer ("100 - 10 = 90% off")."""
    policy, told = _numbers(" ".join(passages))[:MAX_STATED], _numbers(question)[:MAX_STATED]
    worked = {x for a in policy for b in told for x in (*_one_step(a, b), *_one_step(b, a))}
    return {round(x, 2) for x in worked if x >= 10 or x != int(x)}


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in _NUMBER.findall(text)]


def _derivable(stated: list[float]) -> set[float]:
    """The stated numbers and what one operation on two of them gives, rounded to cents. A small whole number
    must be stated: one step from almost any pair reaches it."""
    stated = list(dict.fromkeys(stated))[:MAX_STATED]
    derived = {x for a, b in itertools.permutations(stated, 2) for x in _one_step(a, b)}
    return {round(x, 2) for x in stated} | {round(x, 2) for x in derived if x >= 10 or x != int(x)}


def _one_step(a: float, b: float) -> tuple[float, ...]:
    """Sum, difference, product, percentage and quotient."""
    return a + b, a - b, a * b, a * b / 100, a / b if b else 0.0


def _stem(word: str) -> str:
    """Plural, -ed and -ing forms count as the same word (a crude stemmer is enough here)."""
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word
