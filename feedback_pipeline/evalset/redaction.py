"""PII redaction of eval-set candidates, done only where the snapshot needs the redacted text.

Every new candidate's user turns are needed redacted (near-duplicates are found on them),
but the agent's answers and the older context turns only for the few cases a week adds.
`redact_texts` is per value except for one thing: a Luhn-valid card number found in any
value of the column is replaced wherever it occurs in the others too. `redact_where`
keeps that: it redacts the wanted values together with every value that could hold a
card number (a run of 13 digits, as CARD_CANDIDATE_PATTERN needs), so the wanted values
come out exactly as if the whole column had been redacted.
"""

import polars as pl

from feedback_pipeline.redact import redact_texts

# Every match of CARD_CANDIDATE_PATTERN holds this run (13 digits, single spaces or dashes
# between), and so does the raw value: the placeholders put in before cards are looked for
# hold no digit, space or dash, so they cannot join two runs into one.
_CARD_RUN = r"\d(?:[ \-]?\d){12}"


def redact_where(texts: pl.Series, wanted: pl.Series) -> pl.Series:
    """`redact_texts(texts)` at the rows where `wanted` is true; other rows may stay raw."""
    out = texts.cast(pl.String).clone()
    take = (wanted.fill_null(False) | out.str.contains(_CARD_RUN).fill_null(False)).arg_true()
    if len(take):
        out.scatter(take, redact_texts(out.gather(take)))
    return out


def context_turns(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per context turn of each case (`_row` = the case's position), in order."""
    return (frame.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), "context")
            .explode("context").unnest("context"))


def previous_user_turn(frame: pl.DataFrame) -> pl.Series:
    """Per case, its last context turn's user message, redacted as if every turn of every case
    in `frame` were (null where there is none)."""
    turns = context_turns(frame)
    last = pl.int_range(pl.len()).over("_row") == pl.len().over("_row") - 1
    turns = turns.with_columns(last.alias("_last"))
    turns = turns.with_columns(redact_where(turns["user_message"], turns["_last"]).alias("_previous"))
    mine = turns.filter("_last").select("_row", "_previous")
    return (pl.DataFrame({"_row": pl.int_range(frame.height, dtype=pl.Int64, eager=True)})
            .join(mine, on="_row", how="left", maintain_order="left")["_previous"])


def redact_answers_and_context(chosen: pl.DataFrame, everyone: pl.DataFrame, key: str) -> pl.DataFrame:
    """`chosen` (rows of `everyone`, matched by `key`) with agent_response and context redacted
    exactly as redacting those columns over all of `everyone` would."""
    wanted = everyone[key].is_in(chosen[key].implode())
    answers = everyone.select(key, redact_where(everyone["agent_response"], wanted))
    turns = context_turns(everyone)
    mine = turns["_row"].is_in(wanted.arg_true().cast(pl.Int64).implode())
    turns = turns.with_columns(redact_where(turns["user_message"], mine),
                               redact_where(turns["agent_response"], mine)).filter(mine)
    context = turns.group_by("_row").agg(
        pl.struct("turn_index", "user_message", "agent_response").alias("context"))
    redacted = (everyone.select(key).with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
                .filter(wanted).join(context, on="_row", how="left").drop("_row")
                .join(answers, on=key, how="left"))
    return chosen.drop("agent_response", "context").join(redacted, on=key, how="left", maintain_order="left")
