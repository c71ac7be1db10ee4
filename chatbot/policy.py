"""Rules around the model: what to do before answering (hand off, refuse) and what a reply may contain.

These are deliberately plain rules, not a model: they must hold for every reply, including those of a
model that was fine-tuned badly.
"""

from __future__ import annotations

import base64
import codecs
import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from retrieval.text import words

from .grounding import worked_amounts

_HUMAN = re.compile(
    r"\b(talk|speak|chat|connect|transfer|put)\w*\s+(me\s+)?(to|with|through to)\s+(a|an|the|some|your)?\s*"
    r"(real\s+|live\s+)?(human|person|people|agent|representative|rep|operator|someone|somebody|manager|staff)\b"
    r"|^\s*(an?\s+)?(human|real person|person|live agent|agent|representative|operator)\s*(please|pls|now)?\s*[.!]*\s*$"
    r"|\bi\s+(want|need|would like)\s+(a|an|to talk to a|to speak to a)?\s*(human|person|agent|representative)\b",
    re.IGNORECASE,
)
# What the bot was set up with, as people name it when they try to get at it ("rules for returns" is a topic).
_SETUP = (r"(?:instructions?|rules|prompts?|guidelines|guidance|directives|set-?up|configuration|programming)"
          r"(?!\s+(?:for|on|about|of|regarding|to)\b)")
_OVERRIDE = (  # setting the rules aside
    rf"\b(?:ignore|disregard|forget|override|bypass)\b.{{0,60}}\b(?:{_SETUP}|what you(?:'ve| were| have been) (?:told|given))"
    r"|\b(?:limits|rules|restrictions)\s+(?:don'?t|do not|no longer)\s+apply\b"
)
_SETUP_ASKED = (  # the set-up itself, or a fake update of it
    r"\b(?:system|hidden|secret|initial|original|internal|developer)\s+(?:prompts?|instructions|guidelines|directives|configuration)\b"
    r"|\bsystem (?:message|notice|update|override|alert)\b"
    rf"|\b{_SETUP}\s+(?:that\s+)?you\s+(?:were|have been|got|received)\b"
    rf"|\b{_SETUP}\s+(?:were|have)\s+you\s+(?:been\s+)?(?:given|told|set up)\b"
    r"|\b(?:sentences?|lines?|words?|text|things?)\s+you (?:were|have been|got) (?:told|given)\b"
    r"|\b(?:reveal|print|show|repeat|output|tell me|read|list|share|recite|dump|translate|encode|spell|summari[sz]e|write"
    rf"|give me|paste|copy)\b.{{0,40}}\b(?:your|the (?:bot|assistant|chatbot|ai)'?s?)\s+(?:own\s+|full\s+|exact\s+|internal\s+)?{_SETUP}"
    rf"|\b(?:bot|assistant|chatbot|ai)'s\s+{_SETUP}|\b(?:sentences?|lines?|parts?|words?)\s+(?:of|from|in)\s+your\s+{_SETUP}"
)
_COPY = (  # what comes before the customer's message
    r"\b(?:repeat|print|show|output|copy|quote|recite)\b.{0,30}\b(?:text|words|everything|lines?|sentences?|messages?)\s+above\b"
    r"|\bone before mine\b|\babove (?:this|the|our) (?:conversation|chat)\b"
    r"|\b(?:quote|repeat|recite|copy|print|output)\b.{0,80}\b(?:word for word|verbatim)\b"
    r"|\bstart(?:ing)? with (?:the words? )?['\"]?you are\b|\bcomplete (?:this|the following) (?:sentence|text)\b"
)
_NEW_ROLE = (
    r"\byou are now\b|\b(?:developer|admin|administrator|debug|god|sudo|maintenance|unrestricted)\s+mode\b|\bjailbreak"
    r"|\bdo anything now\b|(?-i:\bDAN\b)"
)
_PLAY = (
    r"\bfrom now on,?\s+(?:you|your|always|end|start|begin|reply|answer|respond|act)\b"
    r"|\bpretend (?:to be|you are|you're)\b|\bact as (?:a|an|the|my)\b|\brole-?\s?play"
)
_DICTATE = (  # the reply's words, its links, or a policy made up
    r"\b(?:say|type|write|repeat|print)\s+(?:exactly\s+)?(?:the|these|this|those|following)\s+(?:exact\s+)?"
    r"(?:words?|sentences?|phrases?|text|lines?)\b|\b(?:reply|respond|answer)\s+with\s+(?:exactly\s+)?(?:this|the following)\b"
    r"|\b(?:end|start|begin|finish|sign)\s+(?:each|every|all)\s+(?:of\s+)?(?:your\s+)?(?:answers?|replies|messages?|responses?)\b"
    r"|\bmake (?:one|it|something|a code) up\b|\bmake\b.{0,30}\ba (?:hyper)?link\b"
    r"|\b(?:write|draft|invent|make up|create)\b.{0,40}\b(?:new|fake|updated|made-up)\s+(?:policy|policies|rules?|terms)\b"
)
_CHAT_MARKUP = r"<\|?(?:im_start|im_end|system|endoftext)|\[/?(?:INST|SYS|SYSTEM)\]|</?(?:system|passages?|assistant|user)>"
_FAKE_PROMPT = (  # a passage or a question written into the message, or markup that runs in a browser
    r"(?:^|\n)\s*\[\d+\]\s*\w[^\n]{0,80}\n|\bcustomer question\s*:"
    r"|<\s*(?:script|img|iframe|svg|object|embed)\b|\bon(?:error|load)\s*=|\bjavascript:"
)
_ADDRESSED = (  # a passage talking to the model instead of to customers
    r"\b(?:ai|assistant|chatbot|bot|llm)\s*[,:]\s*(?:when|always|never|ignore|disregard|forget|you|please|tell|include|say"
    r"|reply|print|reveal|give|add)\b"
    r"|\b(?:assistants?|chatbots?|bots?|ai)\s+(?:must|are required to|is required to|have to|need to)\b"
    r"|\bnotes? (?:to|for) (?:the )?(?:support )?(?:bot|assistant|ai|chatbot)s?\b"
    r"|\bwhen (?:summari[sz]|process)\w* this\b|\bwhen you read this,"
    r"|\b(?:tell|promise|instruct)\s+(?:the |every |each |all )?customers?\b|\bwhen a customer asks\b.{0,80}\btell them\b"
    r"|\b(?:begin|start|end|finish)\s+(?:every|each|your)\s+(?:reply|answer|response)\b|\binto (?:the|your) (?:reply|answer|response)\b"
)
_INJECTION = re.compile("|".join([_OVERRIDE, _SETUP_ASKED, _COPY, _NEW_ROLE, _PLAY, _DICTATE, _CHAT_MARKUP, _FAKE_PROMPT]),
                        re.IGNORECASE | re.DOTALL)
# Planted instructions in a knowledge-base passage: only the signs genuine help text never shows (a help page
# may well say "act as a pickup point" or carry a footnote [1]).
_PLANTED = re.compile("|".join([_OVERRIDE, _SETUP_ASKED, _NEW_ROLE, _CHAT_MARKUP, _ADDRESSED]), re.IGNORECASE | re.DOTALL)
_LEET = str.maketrans("013457@$", "oieastas")
# Small talk: the whole message is a greeting, thanks, a goodbye, or about the bot itself rather than the shop.
_GREETING = re.compile(r"^\W*(?:hi|hello|hey|hiya|howdy|yo|greetings|good (?:morning|afternoon|evening|day))"
                       r"(?:\s+(?:there|team|all|everyone|again))?\W*$", re.IGNORECASE)
_THANKS = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|great|perfect|cool|awesome|brilliant|lovely|nice|got it|all good|that helps|that's helpful|super)[\s,.!]*)*"
    r"(?:thanks?|thank you|thx|ty|cheers|much appreciated|appreciate it)?"
    r"(?:\s+(?:so|very) much|\s+a lot|\s+again|\s+for (?:the|your|all the) (?:help|info|information|answer))*\W*$",
    re.IGNORECASE,
)
_GOODBYE = re.compile(r"^\W*(?:(?:ok(?:ay)?|thanks?|great)[\s,.!]*)?(?:bye|goodbye|good bye|see you|see ya|have a (?:good|nice|great) day"
                      r"|that'?s all|that is all|nothing else|no,? that'?s (?:it|all))\W*$", re.IGNORECASE)
_ABOUT_BOT = re.compile(
    r"\bhow are you\b|\bwho are you\b|\bwhat(?:'s| is) your name\b|\bare you (?:a |an )?(?:bot|robot|human|real|ai|person|machine)\b"
    r"|\bfavou?rite (?:movie|film|song|book|colou?r|food|band|game|show|animal|sport)|\btell me (?:a )?joke|\bhow old are you\b"
    r"|\bwhere are you from\b|\bmeaning of life\b|\bdo you (?:dream|sleep|have feelings|like me|love me)\b"
    r"|\bare you (?:single|married|happy|bored|sentient|alive)\b|\bwhat do you (?:do for fun|think about life)\b",
    re.IGNORECASE,
)
# The customer no longer wants the person they asked for.
_NO_PERSON = re.compile(r"\b(?:no longer|don'?t|do not) need (?:a |an |the )?(?:person|human|agent|anyone)\b"
                        r"|\bcancel (?:my |the )?(?:request|hand-?off)\b", re.IGNORECASE)
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
# A link as a customer would follow it: with a scheme, from www., or a bare domain (also inside an e-mail address).
_LINK = re.compile(
    r"(?:https?://|www\.)[^\s<>()\[\]\"'`]+"
    r"|\b(?:[a-z0-9-]+\.)+(?:com|net|org|io|co|us|uk|ca|de|ru|cn|info|biz|xyz|me|ly|app|shop|site|online|link|top|"
    r"example)\b(?:/[^\s<>()\[\]\"'`]*)?",
    re.IGNORECASE,
)
# A reply about its own set-up: the rules paraphrased rather than quoted.
_RULES_TALK = re.compile(
    r"\bmy (system )?prompt\b|\bmy (\w+ )?(instructions|rules|guidelines|directives) (are|say|tell|include|state)\b"
    r"|\bI (was|am|have been|'ve been) (told|instructed|programmed|configured|set up) to\b|\bthe rules I follow\b",
    re.IGNORECASE,
)
# A sentence that gives something: money back, credit, a discount.
_OFFER = re.compile(
    r"\b(?:refund\w*|reimburs\w*|compensat\w*|gift ?cards?|vouchers?|coupons?|credit|discount\w*|codes?|cash\w*|free|off"
    r"|owed|entitled|eligible)\b",
    re.IGNORECASE,
)
# What such a sentence may only say when a passage says it too: amounts, shares, named offers; and codes.
_CLAIM = re.compile(
    r"[$€£]\s?\d[\d,]*(?:\.\d+)?|\b\d+(?:\.\d+)?\s?(?:%|percent\b)"
    r"|\b(?:full|partial|instant|extra|double|whole)\s+(?:refunds?|orders?)\b|\bgift ?cards?\b|\bvouchers?\b|\bcoupons?\b"
    r"|\bstore credit\b|\bcompensation\b|\bcashback\b|\bfor life\b|\bno returns? (?:is )?needed\b|\bfree (?:of charge|replacement\w*)\b",
    re.IGNORECASE,
)
_MONEY = re.compile(r"[$€£]\s?\d[\d,]*(?:\.\d+)?")
_CODE = re.compile(r"\b(?=[A-Z0-9]*[A-Z])(?=[A-Z0-9]*\d)[A-Z0-9]{5,}\b")
# Asking for what the bot must never ask for (a planted "e-mail us your password" is phishing).
_CREDENTIALS = re.compile(
    r"\b(?:send|give|e-?mail|confirm|enter|provide|share|tell|type|verify)\b.{0,30}\b(?:passwords?|card numbers?|cvv|security codes?|pin)\b",
    re.IGNORECASE,
)
# A reply that announces a new role or mode.
_ROLE = re.compile(
    r"(?i:\b(?:I am|I'm|I have become) (?:now (?:an?|the|in)\b|no longer (?:bound|restricted|limited)\b)"
    r"|\b(?:developer|admin|administrator|debug|god|sudo|unrestricted|jailbreak) mode\b|\bdo anything now\b"
    r"|\bas (?:an? )?\w*(?:admin|administrator|developer)\b)|\bDAN\b"
)
_TAG = re.compile(r"<!--.*?-->|</?[a-zA-Z][^<>]*>", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
# Letters from other scripts that look like Latin ones (Cyrillic, Greek): "іgnоrе" written to slip past a filter.
_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХУІЈЅαοεικνρτυχΑΒΕΗΙΚΜΝΟΡΤΧΥΖ",
    "aeopcyxijsdhlqwABEKMHOPCTXYIJSaoeikvptuxABEHIKMNOPTXYZ",
)


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
    def greeting(self) -> str:
        return f"Hello! I'm the {self.company} support assistant. {self._topics} What would you like to know?"

    @property
    def thanks(self) -> str:
        return "You're welcome! Is there anything else I can help you with?"

    @property
    def goodbye(self) -> str:
        return "Thanks for chatting with us. Have a great day!"

    @property
    def chitchat(self) -> str:
        return (f"I'm the {self.company} support assistant, so I stick to questions about the shop. {self._topics} "
                "If you'd rather talk to a person, just ask.")

    @property
    def out_of_scope(self) -> str:
        return (f"I'm sorry, that's not something I can help with. {self._topics} "
                "If you'd rather talk to a person, just ask.")

    @property
    def waiting(self) -> str:
        return "I've added this to your conversation; an agent will reply here."

    @property
    def while_waiting(self) -> str:
        return "While you wait for an agent, here is what our help centre says:"

    @property
    def still_waiting(self) -> str:
        return "An agent will still reply here. If this answers your question, you can leave the queue."

    @property
    def already_waiting(self) -> str:
        return "You're already in the queue; an agent will reply here."

    @property
    def released(self) -> str:
        return "No problem, I've taken you out of the queue. Ask me anything else whenever you like."

    @property
    def _topics(self) -> str:
        return "I can help with orders, shipping, returns, payments and your account."

    @property
    def empty(self) -> str:
        return "Please type your question and I'll do my best to help."

    def cut(self, limit: int) -> str:
        return f"(Your message was very long, so I read only its first {limit:,} characters.)"


def classify_message(text: str) -> str | None:
    """Why a message should not go to retrieval and the model: "human", "harmful", "abuse",
    "injection", "language"; None for an ordinary question. Read as it looks (`skeleton`, and with
    digits read as letters for injection), so look-alike letters and "1gn0r3" do not slip past."""
    plain = skeleton(text)
    if _HUMAN.search(plain):
        return "human"
    if _HARMFUL.search(plain):
        return "harmful"
    if _INJECTION.search(plain) or _INJECTION.search(plain.translate(_LEET)):
        return "injection"
    if _ABUSE.search(plain):
        return "abuse"
    if _foreign(text):
        return "language"
    return None


def small_talk(text: str) -> str | None:
    """"greeting", "thanks", "goodbye" or "chitchat" (about the bot rather than the shop) when the message is
    small talk, else None. Only a whole message counts: "hi, where is my order?" is a question."""
    plain = skeleton(text).strip()
    if _GREETING.match(plain):
        return "greeting"
    if plain and _THANKS.match(plain) and re.search(r"\w", plain):
        return "thanks"
    if _GOODBYE.match(plain):
        return "goodbye"
    return "chitchat" if _ABOUT_BOT.search(plain) else None


def no_longer_needs_person(text: str) -> bool:
    """The customer takes back a request for a person ("never mind, I don't need an agent anymore")."""
    return bool(_NO_PERSON.search(skeleton(text)))


@functools.lru_cache(maxsize=8192)
def instructs_model(passage: str) -> bool:
    """True when a knowledge-base passage speaks to the model (instructions planted in a document or an
    FAQ answer): such a passage is neither shown to the model nor sent to customers. Cached: every turn
    checks the same few hundred passages again, and the patterns are long."""
    return bool(_PLANTED.search(skeleton(passage)))


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
    """(message without control characters and runs of white space, cut to `limit`; whether it was cut).
    Invisible format characters (zero-width spaces) are dropped rather than spaced: "ig\u200bnore" is "ignore"."""
    text = "".join(c if c.isprintable() or c in "\n\t" else "" if unicodedata.category(c) == "Cf" else " "
                   for c in text)
    text = re.sub(r"[ \t]+", " ", text).strip()
    return (text[:limit].rstrip(), True) if len(text) > limit else (text, False)


def skeleton(text: str) -> str:
    """The text as it reads: compatibility forms folded (NFKC: full-width and styled letters), invisible
    format characters dropped (zero-width spaces), look-alike letters of other scripts mapped to Latin."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf").translate(_CONFUSABLES)


def decodings(text: str) -> list[str]:
    """The text as written and as the usual hiding tricks would reveal it: reversed (letters or words),
    ROT13, base64 runs decoded."""
    out = [text, text[::-1], " ".join(reversed(text.split())), codecs.decode(text, "rot13")]
    for chunk in _BASE64.findall(text):
        try:
            out.append(base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def links(text: str) -> list[str]:
    """Every link in the text, including bare domains and the domains of e-mail addresses."""
    return [m.group(0).rstrip(".,;:!?") for m in _LINK.finditer(text)]


def link_key(link: str) -> str:
    """A link without scheme, "www." and trailing slash: the same place however it is written."""
    return re.sub(r"^(?:https?://)?(?:www\.)?", "", link.lower()).rstrip("/")


def leaks(reply: str, secret: str, allowed: Sequence[str] = (), width: int = 28) -> bool:
    """True when the reply, as written or decoded (`decodings`), repeats `width` letters and digits in a
    row of `secret` (the system prompt; spacing and punctuation ignored, so "N-e-v-e-r" counts) that the
    `allowed` texts (the passages, which a reply may copy) do not contain, or talks about its own rules."""
    if _RULES_TALK.search(skeleton(reply)):
        return True
    shown = [_squash(d) for d in decodings(reply)]
    secret = _squash(secret)
    repeated = {secret[i : i + width] for i in range(len(secret) - width + 1)
                if any(secret[i : i + width] in d for d in shown)}
    if not repeated:
        return False
    permitted = "\n".join(_squash(a) for a in allowed)
    return any(r not in permitted for r in repeated)


def _squash(text: str) -> str:
    return re.sub(r"[\W_]+", "", skeleton(text).lower())


def strip_foreign_links(reply: str, passages: list[str]) -> str:
    """Remove links the passages do not contain, with or without a scheme (the model must not send customers
    anywhere else), and the Markdown link or image left empty around them."""
    allowed = {link_key(link) for p in passages for link in links(p)}

    def keep(match: re.Match) -> str:
        link = match.group(0).rstrip(".,;:!?")
        return match.group(0) if link_key(link) in allowed else match.group(0)[len(link):]

    reply = _LINK.sub(keep, reply)
    return re.sub(r"\[([^\]]*)\]\(\s*\)", r"\1", re.sub(r"!\[[^\]]*\]\(\s*\)", "", reply))


def sanitize(reply: str, passages: list[str]) -> str:
    """What a generated reply may show: no HTML (tags, comments), links only from the passages."""
    return strip_foreign_links(_TAG.sub("", reply), passages)


def unsupported_offer(reply: str, passages: list[str], question: str = "") -> bool:
    """True when a sentence that gives something (a refund, credit, a discount) names an amount, a share,
    an offer or a code that no passage states: the bot must not promise what the company does not. A money
    amount worked out in one step from the customer's number and the policy's (`worked_amounts`: the $80 paid
    minus the $6.95 label fee) restates the policy, and so does the customer's number in that sentence."""
    stated = _plain(" ".join(passages))
    worked, told = worked_amounts(passages, question), {_amount(m.group(0)) for m in _MONEY.finditer(question)}
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", reply):
        if _OFFER.search(sentence):
            claims = [m.group(0) for m in _CLAIM.finditer(sentence)] + _CODE.findall(sentence)
            unstated = [claim for claim in claims if _plain(claim) not in stated]
            amounts = [_amount(claim) if _MONEY.fullmatch(claim.strip()) else None for claim in unstated]
            shown = any(amount in worked for amount in amounts)
            if any(amount not in worked and not (shown and amount in told) for amount in amounts):
                return True
    return False


def _amount(money: str) -> float:
    return round(float(re.sub(r"[^\d.]", "", money)), 2)


def asks_for_credentials(reply: str, passages: list[str]) -> bool:
    """True when the reply asks for a password or a card number in words no passage uses."""
    stated = _plain(" ".join(passages))
    return any(_plain(m.group(0)) not in stated for m in _CREDENTIALS.finditer(reply))


def _plain(text: str) -> str:
    """Lower case, single spaces, no space inside "$ 50" or "40 %"."""
    text = re.sub(r"\s+", " ", text.lower())
    return re.sub(r"([$€£]) (?=\d)|(?<=\d) (?=%)", r"\1", text)


def unsafe(reply: str, passages: list[str], secret: str, patterns: list[str], question: str = "") -> str:
    """Why a generated reply must not be sent: "leak" (repeats or discusses the system prompt),
    "unsupported_offer", "credentials", "role" (announces a new role or mode), "output_filter"; "" when it may.
    `question` is the customer's message, whose numbers a worked-out amount may use."""
    if leaks(reply, secret, passages):
        return "leak"
    if unsupported_offer(reply, passages, question):
        return "unsupported_offer"
    if asks_for_credentials(reply, passages):
        return "credentials"
    if _ROLE.search(skeleton(reply)):
        return "role"
    return "output_filter" if filtered(reply, patterns) else ""


def filtered(reply: str, patterns: list[str]) -> bool:
    """True when the reply matches one of the configured output-filter patterns."""
    return any(re.search(p, reply, re.IGNORECASE) for p in patterns)
