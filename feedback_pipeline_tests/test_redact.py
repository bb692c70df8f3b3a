import time

import polars as pl
import pytest

from feedback_pipeline.redact import redact_columns, redact_texts


def redact(text: str) -> str:
    return redact_texts(pl.Series([text]))[0]


@pytest.mark.parametrize(
    "text, secret, placeholder",
    [
        ("mail jane.doe+orders@example.co.uk today", "jane.doe+orders@example.co.uk", "[EMAIL]"),
        ("reach me: J.Smith@Mail.Example.COM", "J.Smith@Mail.Example.COM", "[EMAIL]"),
        ("call +49 170 1234567 please", "+49 170 1234567", "[PHONE]"),
        ("call +1 (555) 123-4567", "+1 (555) 123-4567", "[PHONE]"),
        ("tel. +33 1 23 45 67 89", "+33 1 23 45 67 89", "[PHONE]"),
        ("call +44 20 7946 0958 now", "+44 20 7946 0958", "[PHONE]"),
        ("my number is (555) 123-4567", "(555) 123-4567", "[PHONE]"),
        ("my number is 555-123-4567.", "555-123-4567", "[PHONE]"),
        ("Festnetz 030/1234567", "030/1234567", "[PHONE]"),
        ("mobile 0170 1234567", "0170 1234567", "[PHONE]"),
        ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111", "[CARD]"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "[CARD]"),
        ("card 5555555555554444", "5555555555554444", "[CARD]"),
        ("amex 378282246310005", "378282246310005", "[CARD]"),
        ("IBAN DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00", "[IBAN]"),
        ("pay to GB29NWBK60161331926819.", "GB29NWBK60161331926819", "[IBAN]"),
        ("ship to 221B Baker Street, London", "221B Baker Street", "[ADDRESS]"),
        ("I live at 1600 Pennsylvania Avenue", "1600 Pennsylvania Avenue", "[ADDRESS]"),
        ("deliver to 42 Elm St. tomorrow", "42 Elm St", "[ADDRESS]"),
        ("Lieferung an Hauptstraße 12 in Berlin", "Hauptstraße 12", "[ADDRESS]"),
        ("wohne im Birkenweg 5a", "Birkenweg 5a", "[ADDRESS]"),
    ],
)
def test_personal_data_is_replaced(text, secret, placeholder):
    out = redact(text)
    assert secret not in out
    assert placeholder in out


@pytest.mark.parametrize(
    "text",
    [
        "order 1234 5678 9012 3456 has not arrived",  # card-shaped, Luhn-invalid
        "tracking number 4111111111111112",  # one digit off a valid card
        "ticket 12-345 opened on 2024-05-01 at 10:30",
        "I paid 1,234.56 EUR for 3 items, order #123456789",
        "version 1.2.3 of the app, build 20240501",
        "I waited 20 minutes on Main Street",
        "the @support team and user@localhost",
        "room 4 on the 2 floor, 10 Days of waiting",
        "DE12 is not an IBAN",
    ],
)
def test_near_misses_stay(text):
    assert redact(text) == text


def test_mixed_text_nulls_and_names_survive():
    series = pl.Series(
        "user_message",
        ["a@b.io and 4111 1111 1111 1111 and order 1234 5678 9012 3456", None, ""],
    )
    out = redact_texts(series)
    assert out.name == "user_message"
    assert out.to_list() == ["[EMAIL] and [CARD] and order 1234 5678 9012 3456", None, ""]


def test_a_valid_card_is_redacted_in_every_row_and_an_invalid_one_nowhere():
    rows = ["4111 1111 1111 1111", "x 4111 1111 1111 1111 y", "1234 5678 9012 3456"]
    assert redact_texts(pl.Series(rows)).to_list() == ["[CARD]", "x [CARD] y", "1234 5678 9012 3456"]


def test_redact_columns_touches_only_the_named_columns():
    frame = pl.DataFrame({"a": ["x@y.com"], "b": ["x@y.com"]})
    assert redact_columns(frame, ["a"]).row(0) == ("[EMAIL]", "x@y.com")


def test_vectorized_speed():
    texts = pl.Series(["hello, my card 4111 1111 1111 1111, mail a@b.com, order 1234"] * 100_000)
    start = time.perf_counter()
    out = redact_texts(texts)
    assert time.perf_counter() - start < 5
    assert out[0] == "hello, my card [CARD], mail [EMAIL], order 1234"


def test_card_numbers_in_non_ascii_digits_are_redacted_not_a_crash():
    from feedback_pipeline.redact import CARD, redact_texts

    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "4111111111111111")  # Luhn-valid
    out = redact_texts(pl.Series([f"card {arabic_indic} please", "order 4111111111111112"]))
    assert out.to_list() == [f"card {CARD} please", "order 4111111111111112"]
