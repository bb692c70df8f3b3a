"""PII redaction of free text before it leaves the machine (e.g. to an LLM judge).

Vectorized over Polars string columns: each kind of personal data is a regex
replaced by a placeholder. Card numbers are replaced only when Luhn-valid, so an
order or tracking number of the same shape stays. The patterns aim at
over-redaction rather than leaks; they do not claim to find every address format
(English "12 Main Street" and German "Hauptstraße 12" styles are covered).
"""

import unicodedata

import polars as pl

EMAIL, PHONE, CARD, IBAN, ADDRESS = "[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[ADDRESS]"

EMAIL_PATTERN = r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}"
# Country code, two check digits, 11-30 alphanumerics, optionally grouped by spaces.
IBAN_PATTERN = r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"
# 13-19 digits, optionally separated by single spaces or dashes.
CARD_CANDIDATE_PATTERN = r"\b(?:\d[ \-]?){12,18}\d\b"
PHONE_PATTERNS = (
    # International: +CC then 2-6 digit groups: "+49 170 1234567", "+33 1 23 45 67 89".
    r"\+\d{1,3}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){2,6}\b",
    # North American: "(555) 123-4567", "555-123-4567", "555.123.4567".
    r"(?:\(\d{3}\) ?|\b\d{3}[.\-])\d{3}[.\-]\d{4}\b",
    # National with trunk prefix and a separator: "0170 1234567", "030/123 4567".
    r"\b0\d{2,4}[ /\-]\d{3,8}(?:[ \-]\d{2,5})?\b",
)
_STREET_WORDS = (
    "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way"
    "|Place|Pl|Terrace|Square|Sq|Parkway|Pkwy|Highway|Hwy"
)
ADDRESS_PATTERNS = (
    # "12 Main Street", "221B Baker St.", "1600 Pennsylvania Avenue NW".
    rf"\b\d{{1,5}}[A-Za-z]? (?:[A-Z][A-Za-z'\-]+ ){{1,3}}(?:{_STREET_WORDS})\b\.?",
    # "Hauptstraße 12", "Musterweg 5a", "Am Marktplatz 3".
    r"\b[A-ZÄÖÜ][a-zäöüß\-]*(?:straße|strasse|str\.|weg|allee|platz|gasse|ring|damm)"
    r" \d{1,4}[a-z]?\b",
)


def redact_texts(series: pl.Series) -> pl.Series:
    """The series with emails, IBANs, Luhn-valid card numbers, phones and addresses replaced."""
    out = series.cast(pl.String)
    out = out.str.replace_all(EMAIL_PATTERN, EMAIL).str.replace_all(IBAN_PATTERN, IBAN)
    cards = _luhn_valid_candidates(out)
    if cards:
        out = out.str.replace_many(cards, [CARD] * len(cards))
    for pattern in PHONE_PATTERNS:
        out = out.str.replace_all(pattern, PHONE)
    for pattern in ADDRESS_PATTERNS:
        out = out.str.replace_all(pattern, ADDRESS)
    return out.alias(series.name)


def redact_columns(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """`frame` with each of `columns` passed through `redact_texts`."""
    return frame.with_columns(redact_texts(frame.get_column(c)) for c in columns)


def _luhn_valid_candidates(texts: pl.Series) -> list[str]:
    """The distinct card-shaped substrings of `texts` that pass the Luhn check.

    One Polars pass finds the candidates; the replacement then uses these exact
    strings (Aho-Corasick), so only Luhn-valid numbers are redacted. The check itself
    runs in Python over the distinct candidates (a handful per column): `\\d` also
    matches non-ASCII digits ("٤١١١..."), whose values only `unicodedata` knows.
    """
    candidates = texts.str.extract_all(CARD_CANDIDATE_PATTERN).explode().drop_nulls().unique()
    valid = [c for c in candidates.to_list() if _luhn_ok([unicodedata.decimal(ch) for ch in c if ch.isdecimal()])]
    # Longest first, so a number is never half-replaced by a shorter valid prefix.
    return sorted(valid, key=len, reverse=True)


def _luhn_ok(digits: list[int]) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
