"""Follow-up or new topic: which customer message a message continues, so retrieval reads it right.

"How long does a refund take?" then "Do you sell pizza?" is a new question and must be searched alone;
"and how much is it?" names its topic only in the question before it. A message that stands on its own is
never read joined to an earlier one, however confident the joined search would be.

Plain rules, measured with `supportbot eval conversations data/eval/conversations.jsonl`: a message continues
the conversation when it opens like a continuation ("and ...", "what about ..."), or points back ("it",
"that", "those") with little of its own, or names no topic at all ("how much?"). Of the rest, a question
(`asks`) that does not go back to an earlier topic by name (`goes_back`) leans on the entry the conversation
is on (`SupportBot._on_topic_hits`); a remark is read alone.
"""

from __future__ import annotations

import re

from retrieval.text import words

# Openings that only continue: "and for furniture?", "what about Canada?", "same for gift cards?"
_CONTINUES = re.compile(
    r"^\W*(?:and|plus|or|but|so|then|what about|how about|what if|same (?:for|with|goes for)|ok(?:ay)?,? (?:and|but|so|what)"
    r"|what else|anything else about|in that case|if so|if not|even)\b",
    re.IGNORECASE,
)
# Endings that lean on what came before: "when do I get my money back then?", "veterans too?"
_LEANS_BACK = re.compile(r"\b(?:then|though|too|instead|as well|either|again)\W*$", re.IGNORECASE)
# Going back to an earlier topic names it: "so back to the refund: ...", "ok, about the missing item, ..."
_GOES_BACK = re.compile(r"\b(?:back to|going back to|returning to)\b|^\W*(?:\w+\W+){0,2}?(?:for|about) the [\w\s]{1,30},",
                        re.IGNORECASE)
# Openings of a question put without a question mark: "is there a fee", "what do I bring", "can I skip the wait"
_ASKS = re.compile(r"^\W*(?:(?:ok(?:ay)?|so|and|but|also|um|hmm)\W+)?(?:what|what's|whats|how|when|where|who|whom|whose|why|which"
                   r"|is|are|was|were|am|do|does|did|can|could|will|would|should|shall|may|might|must|have|has|any|anything)\b",
                   re.IGNORECASE)
# Words that point back to something said before ("there" only where it is not "is there" / "there are").
_POINTS_BACK = frozenset("it its itself that this these those they them their one ones same such either both there".split())
_EXISTENTIAL = re.compile(r"\b(?:is|are|was|were|be|any)\s+there\b|\bthere(?:\s+(?:is|are|was|were|be)|'s|'re)\b", re.IGNORECASE)
# Words that carry no topic of their own in a short question (besides retrieval's stopwords).
_EMPTY = frozenset(
    "a an and are as at be but by can could did do does for from had has have how i if in is it its me my of on or "
    "our please so than that the their them then there these they this to was we were what when where which who why "
    "will with would you your much many long take takes cost costs also too ok okay yes no really still just get "
    "need want mean about any else more one ones same such either both those possible able happen happens work "
    "works".split()
)
MAX_OWN_WORDS = 3  # a message that points back is a follow-up when it has at most this many words of its own
# A follow-up in form that names a topic of its own ("also can I return my kettle if I opened it?") is read
# alone when the message alone is matched at least this confidently.
OWN_TOPIC_WORDS = 3
OWN_TOPIC_CONFIDENCE = 0.8


def own_words(text: str) -> list[str]:
    """The words of a message that name a topic (no function words, no words that point back)."""
    return [w for w in words(text) if w not in _EMPTY and len(w) > 1]


def asks(text: str) -> bool:
    """Whether the message is put as a question ("is there a fee", "who do I write to?"), not a remark
    ("good to know, thanks", "my landlord is so slow")."""
    return "?" in text or bool(_ASKS.match(text))


def goes_back(text: str) -> bool:
    """Whether the message returns to an earlier topic by name ("back to the refund: ...")."""
    return bool(_GOES_BACK.search(text))


def is_follow_up(text: str) -> bool:
    """Whether the message continues the previous question rather than standing on its own."""
    if goes_back(text):
        return False
    if _CONTINUES.search(text) or _LEANS_BACK.search(text):
        return True
    own = own_words(text)
    if not own:  # "how much?", "why?", "how long does that take?"
        return True
    pointed = set(words(_EXISTENTIAL.sub(" ", text))) & _POINTS_BACK
    return bool(pointed) and len(own) <= MAX_OWN_WORDS


def names_own_topic(text: str, confidence: float) -> bool:
    """Whether a message read as a follow-up still stands on its own: it names a topic of its own (at least
    `OWN_TOPIC_WORDS` words) and retrieval matches the message alone with `OWN_TOPIC_CONFIDENCE` or more."""
    return len(own_words(text)) >= OWN_TOPIC_WORDS and confidence >= OWN_TOPIC_CONFIDENCE


def topic_message(previous: list[str], is_question=lambda text: True) -> str:
    """The customer message a follow-up continues: the latest earlier message that stood on its own and
    asked something (`is_question` leaves out small talk), joined to the follow-ups that came after it.
    `previous` is the customer's earlier messages, oldest first; "" when there is none."""
    chain: list[str] = []
    for text in reversed(previous):
        if not is_question(text):  # small talk in between ("thanks!") is skipped
            continue
        chain.append(text)
        if not is_follow_up(text):
            return " ".join(reversed(chain))
    return " ".join(reversed(chain))
