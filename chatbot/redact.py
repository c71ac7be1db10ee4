"""Personal-data redaction for customer text, applied before it is written to the conversation log.

Everything downstream (exports, training data) reads the log, so redacting once at the door keeps email
addresses, phone numbers, payment cards and IBANs out of every later copy. Detection favours recall for
the strongly structured kinds but validates them (Luhn for cards, ISO 13616 mod-97 for IBANs) so that
order numbers and other ordinary numbers stay readable. Standard library only; every pattern is
precompiled and anchored by look-arounds so that a long message is scanned in linear time.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator

KINDS = ("email", "phone", "card", "iban")

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]"}

# Which kind wins where two candidates overlap: IBANs first (mod-97 is the strongest check, and an IBAN's
# digit groups can pass Luhn), then cards (a card must never be half-redacted as a phone), then emails.
_PRIORITY = ("iban", "card", "email", "phone")
# Kinds whose checksum-failing candidates are left alone as a whole: no phone is carved out of them.
_BLOCKING = frozenset({"card", "iban"})

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])"                       # start of the local part, never inside a word
    r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"     # local part: dots only between characters
    r"@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"  # (sub)domain labels
    r"[A-Za-z]{2,63}"                              # top-level domain
    r"(?![A-Za-z0-9_-])"
)

# Card numbers: one contiguous run, 4-4-4-4(-1..3) / 4-4-4-1..3 groups, or 4-6-4/5 (Amex, Diners),
# with one consistent separator. Not inside a longer word or number, nor after a "+" (a phone).
_CARD = re.compile(
    r"(?<![\w+])(?<!\d[ -])"
    r"(?:"
    r"\d{13,19}"
    r"|\d{4}(?P<s1>[ -])\d{4}(?P=s1)\d{4}(?P=s1)\d{1,4}(?:(?P=s1)\d{1,3})?"
    r"|\d{4}(?P<s2>[ -])\d{6}(?P=s2)\d{4,5}"
    r")"
    r"(?!\w)"
)

# IBANs: country code, two check digits, 11-30 alphanumerics, compact or in groups of four.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])"
    r"(?:"
    r"[A-Za-z]{2}\d{2}[A-Za-z0-9]{11,30}"
    r"|[A-Za-z]{2}\d{2}(?: [A-Za-z0-9]{4}){2,7}(?: [A-Za-z0-9]{1,4})?"
    r")"
    r"(?![A-Za-z0-9])"
)

_PHONE = re.compile(
    # Not inside a word or number, not after a currency sign or "/", not after "TW-" style prefixes.
    r"(?<![\w+$\u20ac\u00a3/#])(?<!\w[-.])(?<!\d,)"
    r"(?:"
    # international: +CC or 00CC, then groups separated by space, dot or dash, "(0)" style areas allowed
    r"(?P<intl>(?:\+|00)[1-9]\d{0,14}"
    r"(?:[ .-]?\(\d{1,4}\)[ .-]?\d{1,6}|[ .-]\d{1,6}){0,6})"
    # North American: optional "1 ", area code and exchange not starting with 0/1, then four digits
    r"|(?:1[ .-])?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-]?)[2-9]\d{2}[ .-]?\d{4}"
    # national trunk-prefix numbers: 020 7946 0958, 0800-123-4567, 030/1234567
    r"|(?P<national>0\d{2,4}(?:[ /-]\d{3,8}){1,2})"
    r")"
    r"(?![\w+])(?![ .-]?\d)"  # and not followed by more of a number
)

_NON_DIGIT = re.compile(r"\D")
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # digit -> digit sum of twice the digit
_IBAN_DIGITS = {ord(c): str(int(c, 36)) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _luhn_ok(digits: str) -> bool:
    """The payment-card check digit: what separates a card from any other 13-19 digit number."""
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(c)] for c in digits[-2::-2])
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    """ISO 13616 mod-97 check, so that product codes shaped like IBANs are left alone."""
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = (compact[4:] + compact[:4]).upper().translate(_IBAN_DIGITS)
    return int(rearranged) % 97 == 1


def _card_span(m: re.Match[str]) -> tuple[int, int] | None:
    """The valid card inside a candidate; a trailing short group (an expiry, a CVC) may be dropped."""
    text = m.group()
    if _luhn_ok(_NON_DIGIT.sub("", text)):
        return m.span()
    sep = m.group("s1")
    if sep and text.count(sep) == 4:  # 4-4-4-4-x: try the 16-digit card alone
        cut = text.rindex(sep)
        if _luhn_ok(_NON_DIGIT.sub("", text[:cut])):
            return m.start(), m.start() + cut
    return None


def _iban_span(m: re.Match[str]) -> tuple[int, int] | None:
    """The longest valid IBAN the candidate starts with (a grouped one may have swallowed a word)."""
    text = m.group()
    if " " not in text:
        return m.span() if _iban_ok(text) else None
    end = len(text)
    while end >= 15:
        if _iban_ok(text[:end].replace(" ", "")):
            return m.start(), m.start() + end
        cut = text.rfind(" ", 0, end)
        if cut < 4:
            break
        end = cut
    return None


def _phone_span(m: re.Match[str]) -> tuple[int, int] | None:
    """Phone candidates must carry a plausible number of digits for their format."""
    digits = len(_NON_DIGIT.sub("", m.group()))
    if m.group("intl") is not None:
        ok = 8 <= digits <= (17 if m.group().startswith("00") else 15)
    elif m.group("national") is not None:
        ok = 9 <= digits <= 12
    else:
        ok = True
    return m.span() if ok else None


def _email_span(m: re.Match[str]) -> tuple[int, int] | None:
    """Email addresses have no checksum: the pattern's shape is the whole test."""
    return m.span()


_DETECTORS: dict[str, tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[int, int] | None]]] = {
    "card": (_CARD, _card_span),
    "iban": (_IBAN, _iban_span),
    "email": (_EMAIL, _email_span),
    "phone": (_PHONE, _phone_span),
}


class _Guard:
    """Spans already claimed by a higher-priority kind, merged so that an overlap test is one bisect."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for s, e in sorted(spans):
            if self.ends and s < self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], e)
            else:
                self.starts.append(s)
                self.ends.append(e)

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.starts, end)  # the last claimed span that starts before `end`
        return bool(i) and self.ends[i - 1] > start


def _check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """Normalise the filter; a typo must fail loudly rather than silently let data through."""
    if isinstance(kinds, str):
        kinds = (kinds,)
    wanted = frozenset(kinds)
    unknown = sorted(wanted.difference(KINDS))
    if unknown:
        raise ValueError(f"unknown personal-data kind(s): {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(KINDS)}")
    return wanted


def _candidates(kind: str, text: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, valid) for every candidate of one kind; invalid ones still block lower kinds."""
    pattern, validate = _DETECTORS[kind]
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        span = validate(m)
        if span is not None:
            yield span[0], span[1], True
            pos = span[1]
        else:  # a rejected candidate may still hide a valid one that starts later
            yield m.start(), m.end(), False
            pos = m.start() + 1


def find_personal_data(text: str, kinds: Iterable[str] = KINDS) -> list[tuple[str, int, int]]:
    """(kind, start, end) spans, non-overlapping, in order.

    All kinds are detected even when only some are asked for, so that e.g. a card number is never
    reported as a phone number because cards were filtered out.
    """
    wanted = _check_kinds(kinds)
    if not wanted or not text:
        return []
    found: list[tuple[int, int, str]] = []
    rejected: list[tuple[int, int]] = []  # checksum-failing cards and IBANs: no phone inside them
    for kind in _PRIORITY:
        guard = _Guard([(s, e) for s, e, _ in found] + ([] if kind in _BLOCKING else rejected))
        for s, e, valid in _candidates(kind, text):
            if guard.overlaps(s, e):
                continue
            if valid:
                found.append((s, e, kind))
            elif kind in _BLOCKING:
                rejected.append((s, e))
    found.sort()
    return [(kind, s, e) for s, e, kind in found if kind in wanted]


def redact(text: str, kinds: Iterable[str] = KINDS, keep: str = "") -> str:
    """Replace personal data with placeholders: [EMAIL], [PHONE], [CARD], [IBAN].

    Everything else is kept byte-for-byte, so the logged text still reads as the customer wrote it.
    Spans that also occur in `keep` are the company's own (the support phone number in a passage) and stay.
    """
    spans = [(k, s, e) for k, s, e in find_personal_data(text, kinds) if not (keep and text[s:e] in keep)]
    if not spans:
        return text
    parts: list[str] = []
    pos = 0
    for kind, start, end in spans:
        parts.append(text[pos:start])
        parts.append(PLACEHOLDERS[kind])
        pos = end
    parts.append(text[pos:])
    return "".join(parts)
