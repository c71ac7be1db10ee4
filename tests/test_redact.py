"""Personal-data redaction: what is replaced, what must be left alone, and that nothing else changes.

All data here is fake: example.com / example.org addresses, published test card numbers, the IBAN
examples from the ISO 13616 / bank documentation, and 555-01xx / Ofcom drama phone numbers.
"""

from __future__ import annotations


import pytest

from chatbot.redact import KINDS, find_personal_data, redact

EMAILS = [
    "jane@example.com",
    "John.Doe@example.com",
    "jane.doe+orders@example.org",
    "SUPPORT@EXAMPLE.COM",
    "first.middle.last@mail.eu.example.com",
    "j_o-e%x@example.org",
    "user123@sub-domain.example.co.uk",
    "a@example.com",
    "Mixed.Case+Tag-1@Example.Org",
]

CARDS = [
    "4111 1111 1111 1111",       # Visa, spaces
    "4111-1111-1111-1111",       # Visa, dashes
    "4111111111111111",          # Visa, compact
    "5555 5555 5555 4444",       # Mastercard
    "5105105105105100",          # Mastercard, compact
    "2223 0031 2200 3222",       # Mastercard 2-series
    "3782 822463 10005",         # Amex 4-6-5
    "3782-822463-10005",         # Amex with dashes
    "378282246310005",           # Amex compact
    "6011 1111 1111 1117",       # Discover
    "3530 1113 3330 0000",       # JCB
    "3056 930902 5904",          # Diners 4-6-4
    "4222222222222",             # 13-digit Visa
    "4111 1111 1111 1111 003",   # 19 digits
]

IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "GB82 WEST 1234 5698 7654 32",
    "gb82 west 1234 5698 7654 32",
    "de89370400440532013000",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91ABNA0417164300",
    "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7",
    "IT60X0542811101000000123456",
    "NO93 8601 1117 947",
]

PHONES = [
    "+1 (800) 555-0142",
    "+1(800)555-0142",
    "+1-800-555-0142",
    "+1 800 555 0142",
    "1-800-555-0142",
    "800-555-0142",
    "800.555.0142",
    "800 555 0142",
    "(503) 555 0199",
    "(503)555-0199",
    "5035550199",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+442079460958",
    "0044 20 7946 0958",
    "020 7946 0958",
    "+49 30 123456",
    "+33 1 23 45 67 89",
]

PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]"}

CASES = ([("email", v) for v in EMAILS] + [("card", v) for v in CARDS]
         + [("iban", v) for v in IBANS] + [("phone", v) for v in PHONES])


@pytest.mark.parametrize(("kind", "value"), CASES)
def test_each_kind_is_found_alone_and_inside_a_sentence(kind: str, value: str) -> None:
    assert find_personal_data(value) == [(kind, 0, len(value))]
    assert redact(value) == PLACEHOLDER[kind]
    text = f"Hi, it's {value}, thanks!"
    assert redact(text) == f"Hi, it's {PLACEHOLDER[kind]}, thanks!"
    start = text.index(value)
    assert find_personal_data(text) == [(kind, start, start + len(value))]


@pytest.mark.parametrize("wrapped", [
    "({v})", "<{v}>", "[{v}]", "\"{v}\"", "'{v}'", "{v}.", "{v};", "{v}:", "at:{v}", "\t{v}\n", "{v}?!",
])
@pytest.mark.parametrize(("kind", "value"), [
    ("email", "jane.doe+x@example.com"), ("phone", "800-555-0142"), ("card", "4111 1111 1111 1111"),
    ("iban", "DE89 3704 0044 0532 0130 00"),
])
def test_surrounding_punctuation_is_kept_byte_for_byte(wrapped: str, kind: str, value: str) -> None:
    assert redact(wrapped.format(v=value)) == wrapped.format(v=PLACEHOLDER[kind])


NOT_PERSONAL = [
    # order numbers and ids
    "Order TW-482913 has shipped.",
    "order 482913",
    "Your ticket is TW-482913-01.",
    "Ref 2026-TW-0042",
    # prices and quantities
    "It costs $1,500 or €1.500,00 or £12.99.",
    "Bulk price $1,500,000 for 1500 units.",
    "I ordered 12 items, 3 arrived; 250 ml x 4.",
    # dates, years, times
    "Delivered on 2026-11-22 at 14:05.",
    "Dates: 11/22/2026, 22.11.2026, 01-02-2026, 2026/11/22.",
    "Since 2019, open 8:00-20:00 and 10:30-11:45.",
    # ZIP codes and addresses
    "Ship to Portland, OR 97201 or 97201-1234.",
    "Suite 300, 1200 Main St",
    # versions, addresses, big ordinary numbers
    "Version v1.2 (build 10.0.19045), host 192.168.1.10.",
    "Ranges 200-1000 and 1-10, room 12 34.",
    # Luhn-failing card-shaped numbers
    "Card 4111 1111 1111 1112 was declined.",
    "4111-1111-1111-1112",
    "Number 1234567890123456 is not a card.",
    "5555 5555 5555 4445",
    "3782 822463 10006",
    "12345678901234567890123",
    # IBAN-shaped but with a wrong checksum
    "IBAN DE00 3704 0044 0532 0130 00 is wrong.",
    "GB82WEST12345698765433",
    "NL91ABNA0417164301",
    "gb00 west 1234 5698 7654 32",
    # things that look a bit like email or phones
    "Thanks @mention, see v1.2 and user@localhost.",
    "mail me at jane at example dot com",
    "+1 555",
    "Call 1234567890",
    "C++ 11 and 5+ years",
]


@pytest.mark.parametrize("text", NOT_PERSONAL)
def test_text_without_personal_data_is_returned_unchanged(text: str) -> None:
    assert find_personal_data(text) == []
    assert redact(text) == text


def test_plain_message_and_empty_string_are_unchanged() -> None:
    text = "Hello! My order TW-482913 from 2026-11-22 ($1,500) hasn't arrived at 97201 yet.\n"
    assert redact(text) == text
    assert redact("") == ""


def test_mixed_text_with_every_kind() -> None:
    text = ("Hi, I'm jane.doe+orders@example.com (order TW-482913, $1,500 on 2026-11-22). "
            "Call me at +1 (800) 555-0142 or 503.555.0199 between 8:00-20:00. "
            "I paid with 4111 1111 1111 1111, exp 12/27, refund to DE89 3704 0044 0532 0130 00 "
            "or GB82WEST12345698765432. Backup card: 3782 822463 10005. ZIP 97201.")
    assert redact(text) == (
        "Hi, I'm [EMAIL] (order TW-482913, $1,500 on 2026-11-22). "
        "Call me at [PHONE] or [PHONE] between 8:00-20:00. "
        "I paid with [CARD], exp 12/27, refund to [IBAN] "
        "or [IBAN]. Backup card: [CARD]. ZIP 97201.")
    spans = find_personal_data(text)
    assert [k for k, _, _ in spans] == ["email", "phone", "phone", "card", "iban", "iban", "card"]
    assert text[spans[0][1]:spans[0][2]] == "jane.doe+orders@example.com"
    assert text[spans[4][1]:spans[4][2]] == "DE89 3704 0044 0532 0130 00"


def test_spans_are_ordered_and_do_not_overlap() -> None:
    text = "; ".join(EMAILS + CARDS + IBANS + PHONES)
    spans = find_personal_data(text)
    assert len(spans) == len(EMAILS) + len(CARDS) + len(IBANS) + len(PHONES)
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert end <= start
    assert [text[s:e] for _, s, e in spans] == EMAILS + CARDS + IBANS + PHONES


def test_card_is_never_partly_redacted_as_a_phone() -> None:
    for card in CARDS:
        assert redact(f"card {card} ok", kinds=["phone"]) == f"card {card} ok"
        assert redact(f"card {card} ok") == "card [CARD] ok"


def test_card_followed_by_expiry_keeps_the_expiry() -> None:
    assert redact("4111 1111 1111 1111 12/27") == "[CARD] 12/27"
    assert redact("5555-5555-5555-4444 exp 2027") == "[CARD] exp 2027"


def test_iban_followed_by_words_stops_at_the_iban() -> None:
    assert redact("BE68 5390 0754 7034 with that") == "[IBAN] with that"
    assert redact("DE89 3704 0044 0532 0130 00 is mine") == "[IBAN] is mine"


def test_invalid_iban_is_not_carved_into_phones() -> None:
    text = "IBAN DE00 3704 0044 0532 0130 00 maybe"
    assert redact(text) == text


def test_kinds_filter_only_email() -> None:
    text = "jane@example.com, 800-555-0142, 4111 1111 1111 1111, DE89370400440532013000"
    assert redact(text, kinds=["email"]) == "[EMAIL], 800-555-0142, 4111 1111 1111 1111, DE89370400440532013000"
    assert find_personal_data(text, kinds=("email",)) == [("email", 0, 16)]


def test_kinds_filter_other_combinations() -> None:
    text = "jane@example.com, 800-555-0142, 4111 1111 1111 1111, DE89370400440532013000"
    assert redact(text, kinds=["phone", "card"]) == "jane@example.com, [PHONE], [CARD], DE89370400440532013000"
    assert redact(text, kinds={"iban"}) == "jane@example.com, 800-555-0142, 4111 1111 1111 1111, [IBAN]"
    assert redact(text, kinds="card") == "jane@example.com, 800-555-0142, [CARD], DE89370400440532013000"
    assert redact(text, kinds=[]) == text
    assert redact(text, kinds=KINDS) == "[EMAIL], [PHONE], [CARD], [IBAN]"
    assert redact(text, kinds=iter(["email", "iban"])) == "[EMAIL], 800-555-0142, 4111 1111 1111 1111, [IBAN]"


@pytest.mark.parametrize("kinds", [["ssn"], ["email", "passport"], "phones", ["EMAIL"]])
def test_unknown_kind_raises_value_error_naming_it(kinds) -> None:
    bad = kinds if isinstance(kinds, str) else kinds[-1]
    with pytest.raises(ValueError, match=bad):
        redact("jane@example.com", kinds=kinds)
    with pytest.raises(ValueError, match=bad):
        find_personal_data("", kinds=kinds)


def test_kinds_constant() -> None:
    assert KINDS == ("email", "phone", "card", "iban")


def test_long_message_redacts_every_occurrence() -> None:
    chunk = ("Hello, my order TW-482913 placed on 2026-11-22 for $1,500 has not arrived at ZIP 97201. "
             "Please call +1 (800) 555-0142 or email jane.doe+orders@example.com; I paid with "
             "4111 1111 1111 1111 and want the refund on DE89 3704 0044 0532 0130 00. Thanks a lot! ")
    repeats = 50_000 // len(chunk)
    out = redact(chunk * repeats)
    for placeholder in ("[PHONE]", "[EMAIL]", "[CARD]", "[IBAN]"):
        assert out.count(placeholder) == repeats
    assert out.count("TW-482913") == repeats and out.count("97201") == repeats


@pytest.mark.parametrize("junk", ["1" * 50_000, "a" * 50_000, "a." * 25_000, "a@" * 25_000, "+1 " * 16_000,
                                  "1 " * 25_000, "(1)-" * 12_500])
def test_pathological_input_is_left_alone(junk: str) -> None:
    assert redact(junk) == junk
