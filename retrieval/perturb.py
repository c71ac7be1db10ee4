"""Customers type fast: seeded, documented perturbations of a question, to measure how retrieval holds up
(`supportbot eval retrieval --perturb KIND`) and to train the retriever against them (`train retriever`).

Kinds:
- `typos`: about one word in four gets one slip: a letter swapped for a neighbour on a QWERTY keyboard, a
  letter dropped, a letter doubled, two neighbouring letters swapped, or the space to the next word lost.
  Words of three letters or fewer are left alone (a slip there usually makes another word).
- `lowercase`: all lower case, without the final punctuation, as typed on a phone.
- `chatty`: a greeting or a preamble before the question and, sometimes, thanks after it.
- `all`: each of the above, in that order.

The same text, kind and seed give the same result on every machine (`random.Random` seeded from them)."""

from __future__ import annotations

import random
import re
import zlib

KINDS = ("typos", "lowercase", "chatty")
CHOICES = (*KINDS, "all")
TYPO_RATE = 0.25  # share of eligible words that get a slip

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS = {
    letter: "".join(_ROWS[r + dr][c + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                    if (dr or dc) and 0 <= r + dr < 3 and 0 <= c + dc < len(_ROWS[r + dr]))
    for r, row in enumerate(_ROWS) for c, letter in enumerate(row)
}
_OPENINGS = ("hi, ", "hello! ", "hey there, quick question: ", "hi, I was wondering ", "good morning, ",
             "hello, sorry to bother you, ", "hi again. ", "hey, so ", "um, ", "ok so ")
_CLOSINGS = ("", "", " thanks", " thank you!", " thx", " cheers", " please help")


def perturb(text: str, kind: str, seed: int = 0) -> str:
    """`text` as a customer in a hurry might type it (`kind`: one of CHOICES)."""
    if kind not in CHOICES:
        raise ValueError(f"perturbation {kind!r}: expected one of {', '.join(CHOICES)}")
    for one in KINDS if kind == "all" else (kind,):
        rng = random.Random(zlib.crc32(f"{seed}\0{one}\0{text}".encode()))
        text = _APPLY[one](text, rng)
    return text


def typos(text: str, rng: random.Random) -> str:
    out, last = [], 0
    for match in re.finditer(r"[A-Za-z]{4,}", text):
        if rng.random() >= TYPO_RATE:
            continue
        out.append(text[last:match.start()])
        if text[match.end():match.end() + 1] == " " and rng.random() < 0.15:  # the space to the next word lost
            out.append(match.group())
            last = match.end() + 1
        else:
            out.append(_slip(match.group(), rng))
            last = match.end()
    return "".join(out) + text[last:]


def _slip(word: str, rng: random.Random) -> str:
    at = rng.randrange(1, len(word) - 1)  # first and last letters are typed with more care
    kind = rng.choice(("neighbour", "drop", "double", "swap"))
    if kind == "neighbour" and word[at].lower() in _NEIGHBOURS:
        return word[:at] + rng.choice(_NEIGHBOURS[word[at].lower()]) + word[at + 1:]
    if kind == "drop":
        return word[:at] + word[at + 1:]
    if kind == "swap":
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return word[:at] + word[at] + word[at:]


def lowercase(text: str, rng: random.Random) -> str:
    return text.lower().rstrip(" ?!.")


def chatty(text: str, rng: random.Random) -> str:
    return rng.choice(_OPENINGS) + text[:1].lower() + text[1:] + rng.choice(_CLOSINGS)


_APPLY = {"typos": typos, "lowercase": lowercase, "chatty": chatty}
