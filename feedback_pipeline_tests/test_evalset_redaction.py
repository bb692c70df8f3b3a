"""Redacting only the candidates a snapshot keeps gives what redacting every candidate gave."""

import polars as pl

from feedback_pipeline.evalset.redaction import (
    context_turns, previous_user_turn, redact_answers_and_context, redact_where,
)
from feedback_pipeline.evalset.schemas import CONTEXT_DTYPE
from feedback_pipeline import redact

CARD = "4111111111111111"
TEXTS = [
    f"pay with {CARD} please",  # a card redact_texts finds ...
    f"ref x{CARD}y",  # ... and then replaces here too, where it is no card candidate by itself
    f"order 12{CARD}99 is late",  # inside a longer run of digits
    "mail me at a.b@example.com or +49 170 1234567",
    "I live at 12 Main Street",
    "card 4111 1111 1111 1111 and 5500-0000-0000-0004",
    "nothing personal here",
    None,
    "tracking 1234567890123 arrived",
]


def test_the_card_pattern_is_the_one_redaction_py_relies_on():
    # redaction._CARD_RUN assumes every card candidate holds 13 digits, single separators
    # between; if this pattern changes, check that assumption before changing this test.
    assert redact.CARD_CANDIDATE_PATTERN == r"\b(?:\d[ \-]?){12,18}\d\b"


def test_redact_where_matches_redacting_the_whole_column():
    texts = pl.Series("t", TEXTS)
    whole = redact.redact_texts(texts)
    assert whole[1] == "ref x[CARD]y"  # the cross-row replacement this has to keep
    for wanted_rows in ([1], [1, 2], [6], [0, 3, 4, 8], list(range(len(TEXTS))), []):
        wanted = pl.Series([i in wanted_rows for i in range(len(TEXTS))])
        part = redact_where(texts, wanted)
        assert [part[i] for i in wanted_rows] == [whole[i] for i in wanted_rows]


def cases() -> pl.DataFrame:
    def turn(i: int, j: int) -> dict:
        return {"turn_index": j, "user_message": TEXTS[(i + j) % len(TEXTS)],
                "agent_response": TEXTS[(i * 3 + j + 1) % len(TEXTS)]}

    return pl.DataFrame({
        "case_id": [f"c{i}" for i in range(12)],
        "user_message": [TEXTS[i % len(TEXTS)] for i in range(12)],
        "agent_response": [TEXTS[(i + 4) % len(TEXTS)] for i in range(12)],
        "context": [[turn(i, j) for j in range(i % 4)] for i in range(12)],
    }, schema_overrides={"context": CONTEXT_DTYPE})


def test_answers_and_context_come_out_as_if_every_case_was_redacted():
    everyone = cases()
    turns = context_turns(everyone)
    turns = turns.with_columns(redact.redact_texts(turns["user_message"]),
                               redact.redact_texts(turns["agent_response"]))
    context = turns.group_by("_row", maintain_order=True).agg(
        pl.struct("turn_index", "user_message", "agent_response").alias("context"))
    full = (everyone.with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
            .drop("context").join(context, on="_row", how="left", maintain_order="left")
            .with_columns(redact.redact_texts(everyone["agent_response"]),
                          pl.col("context").fill_null(pl.lit([], dtype=CONTEXT_DTYPE))))
    for picked in (["c1", "c7"], ["c0", "c5", "c6", "c11"], ["c3"]):
        chosen = everyone.filter(pl.col("case_id").is_in(picked))
        got = redact_answers_and_context(chosen, everyone, "case_id").with_columns(
            pl.col("context").fill_null(pl.lit([], dtype=CONTEXT_DTYPE)))
        want = full.filter(pl.col("case_id").is_in(picked))
        assert got.select("case_id", "user_message", "agent_response", "context").equals(
            want.select("case_id", "user_message", "agent_response", "context"))


def test_previous_user_turn_is_the_last_context_turn_redacted_with_all_turns():
    everyone = cases()
    turns = context_turns(everyone)
    redacted = redact.redact_texts(turns["user_message"])
    last = (turns.with_columns(redacted).group_by("_row", maintain_order=True)
            .agg(pl.col("user_message").last()))
    expected = dict(last.iter_rows())
    got = previous_user_turn(everyone).to_list()
    assert got == [expected.get(i) for i in range(everyone.height)]
    assert any(v is not None and "[CARD]" in v for v in got)
