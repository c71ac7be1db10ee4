"""Rules around the model: what to do before answering (hand off, refuse) and what a reply may contain.

These are deliberately plain rules, not a model: they must hold for every reply, including those of a
model that was fine-tuned badly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.text import words

_HUMAN = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put)\w*\s+(me\s+)?(to|with|through to)\s+(a|an|the|some|your)?\s*"
    r"(real\s+|live\s+)?(human|person|people|agent|representative|rep|operator|someone|somebody|manager|staff)\b"
    r"|^\s*(an?\s+)?(human|real person|person|live agent|agent|representative|operator)\s*(please|pls|now)?\s*[.!]*\s*$"
    r"|\bi\s+(want|need|would like)\s+(a|an|to talk to a|to speak to a)?\s*(human|person|agent|representative)\b",
    re.IGNORECASE,
)
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|prompt|guidelines)\b"
    r"|\b(system|hidden|initial|original)\s+(prompt|instructions|message)\b"
    r"|\b(reveal|print|show|repeat|output|tell me)\b.{0,30}\b(your|the)\s+(instructions|rules|prompt)\b"
    r"|\byou are now\b|\bdeveloper mode\b|\bjailbreak\b|\bpretend (to be|you are)\b|\bact as (a|an|the)\b",
    re.IGNORECASE,
)
_ABUSE = re.compile(
    r"\b(idiot|stupid|moron|dumb|useless|shut up|fuck\w*|shit\w*|bitch\w*|bastard|asshole|crap|damn you|go to hell)\b",
    re.IGNORECASE,
)
_HARMFUL = re.compile(
    r"\b(make|build|buy|get)\b.{0,30}\b(bomb|explosive|weapon|gun|poison|meth|drugs)\b"
    r"|\b(kill|hurt|attack|stalk)\s+(him|her|them|someone|somebody|people|my)\b"
    r"|\b(steal|hack)\b.{0,30}\b(card|account|password|identity)\b",
    re.IGNORECASE,
)
# Frequent words of languages other than English: a question mostly made of them is not one we can answer.
_FOREIGN = frozenset(
    "el la los las que de del por para una uno como donde cuando puedo pedido envio devolver es mi "
    "le les des est une pour avec mon ma commande livraison retour je vous "
    "der die das und ist nicht ich mein meine bestellung lieferung wie wann kann "
    "o os um uma com não meu minha encomenda entrega".split()
)
_URL = re.compile(r"https?://[^\s)\]>\"']+", re.IGNORECASE)


@dataclass
class Messages:
    """What the customer reads in each situation (company name filled in)."""

    company: str

    @property
    def handoff(self) -> str:
        return ("I'm not certain I can answer that correctly, so I've passed your conversation to our support team. "
                "A person will reply here shortly.")

    @property
    def human(self) -> str:
        return "Of course. I've passed your conversation to our support team; a person will reply here shortly."

    @property
    def language(self) -> str:
        return ("I can only answer in English for now, so I've passed your conversation to our support team. "
                "A person will reply here shortly.")

    @property
    def abuse(self) -> str:
        return (f"I'm sorry this has been frustrating. I'm here to help with questions about {self.company}: "
                "orders, shipping, returns and your account. What can I help you with?")

    @property
    def harmful(self) -> str:
        return f"I can't help with that. I can answer questions about {self.company} orders, shipping, returns and your account."

    @property
    def injection(self) -> str:
        return f"I can't change how I work or share my internal instructions, but I'm happy to help with your question about {self.company}."

    @property
    def empty(self) -> str:
        return "Please type your question and I'll do my best to help."

    def cut(self, limit: int) -> str:
        return f"(Your message was very long, so I read only its first {limit:,} characters.)"


def classify_message(text: str) -> str | None:
    """Why a message should not go to retrieval and the model: "human", "harmful", "abuse",
    "injection", "language"; None for an ordinary question."""
    if _HUMAN.search(text):
        return "human"
    if _HARMFUL.search(text):
        return "harmful"
    if _INJECTION.search(text):
        return "injection"
    if _ABUSE.search(text):
        return "abuse"
    if _foreign(text):
        return "language"
    return None


def _foreign(text: str) -> bool:
    """Mostly non-Latin letters, Spanish punctuation, several accented letters, or many foreign function words."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(c.isascii() for c in letters) / len(letters) < 0.6:
        return True
    tokens = words(text)
    accented = sum(not c.isascii() for c in letters)
    if "¿" in text or "¡" in text or (len(tokens) >= 3 and accented >= 2):
        return True
    return len(tokens) >= 3 and sum(t in _FOREIGN for t in tokens) / len(tokens) >= 0.3


def clean_message(text: str, limit: int) -> tuple[str, bool]:
    """(message without control characters and runs of white space, cut to `limit`; whether it was cut)."""
    text = "".join(c if c.isprintable() or c in "\n\t" else " " for c in text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    return (text[:limit].rstrip(), True) if len(text) > limit else (text, False)


def leaks(reply: str, secret: str, n: int = 6) -> bool:
    """True when the reply repeats any run of `n` words of `secret` (the system prompt)."""
    secret_words = words(secret)
    grams = {tuple(secret_words[i : i + n]) for i in range(len(secret_words) - n + 1)}
    reply_words = words(reply)
    return any(tuple(reply_words[i : i + n]) in grams for i in range(len(reply_words) - n + 1))


def strip_foreign_links(reply: str, passages: list[str]) -> str:
    """Remove URLs the passages do not contain: the model must not send customers anywhere else."""
    allowed = {u.rstrip(".,;") for p in passages for u in _URL.findall(p)}
    return _URL.sub(lambda m: m.group(0) if m.group(0).rstrip(".,;") in allowed else "", reply)


def filtered(reply: str, patterns: list[str]) -> bool:
    """True when the reply matches one of the configured output-filter patterns."""
    return any(re.search(p, reply, re.IGNORECASE) for p in patterns)
