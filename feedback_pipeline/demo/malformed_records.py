"""Malformed records and conflicting re-sends planted in the demo's JSONL landing files.

One kind per way a landing record can break the contract (MALFORMED_KINDS), each
made by rewriting a clean JSON line, and the re-send of a trace with different
content. Which rows get them and where the lines go lives in `landing_files`.
"""

import polars as pl

MALFORMED_KINDS = (
    "bad_json", "not_an_object", "missing_field", "mistyped_field", "bad_timestamp",
    "negative_latency", "bad_thumbs", "unknown_escalation_reason", "reason_without_escalation",
    "bad_tool_status", "invalid_utf8",
)


def corrupt(lines: pl.DataFrame) -> pl.Series:
    """Apply each row's malformed `kind` (with `variant` 0-3) to its JSON `line`."""
    line, v = pl.col("line"), pl.col("variant")

    def by_variant(*options: pl.Expr | str) -> pl.Expr:
        expr = pl.when(v == 0).then(options[0])
        for k, option in enumerate(options[1:], start=1):
            expr = expr.when(v == k).then(option)
        return expr.otherwise(options[-1])

    reason_re = r'"escalated":(true|false),"escalation_reason":(null|"[a-z_]+")'
    kinds = {
        "bad_json": line.str.slice(0, (line.str.len_chars() * (0.2 + 0.2 * v)).cast(pl.Int64)),
        "not_an_object": by_variant(pl.lit('["not", "an", "object"]'), pl.lit("42"),
                                    pl.lit('"just a string"'), pl.lit("null")),
        "missing_field": by_variant(line.str.replace(r'^\{"trace_id":"[^"]*",', "{"),
                                    line.str.replace(r',"timestamp":"[^"]*"', ""),
                                    line.str.replace(r',"agent_id":"[^"]*"', ""),
                                    line.str.replace(r',"conversation_id":"[^"]*"', "")),
        "mistyped_field": by_variant(line.str.replace(r'"turn_index":\d+', '"turn_index":"three"'),
                                     line.str.replace(r'"latency_ms":\d+,"prompt', '"latency_ms":"fast","prompt'),
                                     line.str.replace(r'"escalated":(true|false)', '"escalated":"yes"')),
        "bad_timestamp": line.str.replace(r'"timestamp":"[^"]*"', pl.lit('"timestamp":"') + by_variant(
            pl.lit("2026-02-30T25:61:00Z"), pl.lit("yesterday afternoon"), pl.lit("")) + '"'),
        "negative_latency": line.str.replace(r'"latency_ms":\d+,"prompt', pl.lit('"latency_ms":-')
                                             + (pl.col("latency_ms") + 1).cast(pl.String) + ',"prompt'),
        "bad_thumbs": line.str.replace(r'"thumbs":(null|"up"|"down")', pl.lit('"thumbs":"') + by_variant(
            pl.lit("sideways"), pl.lit("meh"), pl.lit("thumbs_down")) + '"'),
        "unknown_escalation_reason": line.str.replace(reason_re, pl.lit(
            '"escalated":true,"escalation_reason":"') + by_variant(
            pl.lit("bot_was_rude"), pl.lit("wants_discount"), pl.lit("slow_response")) + '"'),
        "reason_without_escalation": line.str.replace(reason_re, pl.lit(
            '"escalated":false,"escalation_reason":"') + by_variant(
            pl.lit("tone_wrong"), pl.lit("tool_failed"), pl.lit("agent_could_not_answer"),
            pl.lit("wrong_information")) + '"'),
        "bad_tool_status": line.str.replace(r'"status":"(ok|error)"', pl.lit('"status":"') + by_variant(
            pl.lit("timeout"), pl.lit("pending"), pl.lit("failed"), pl.lit("unknown")) + '"'),
        "invalid_utf8": pl.lit("\u0000JUNK") + pl.col("row").cast(pl.String) + "\u0000",
    }
    (kind, corrupted), *rest = kinds.items()
    expr = pl.when(pl.col("kind") == kind).then(corrupted)
    for kind, corrupted in rest:
        expr = expr.when(pl.col("kind") == kind).then(corrupted)
    out = lines.select(expr.otherwise(line))[:, 0]
    assert (out != lines["line"]).all(), "every malformed record must differ from its source"
    return out


def conflicting_resend(lines: pl.DataFrame) -> pl.Series:
    """A re-send of the same trace_id with different content: late thumbs, or a regenerated answer."""
    line = pl.col("line")
    late_thumbs = (pl.when(line.str.contains('"thumbs":"down"', literal=True))
                   .then(line.str.replace('"thumbs":"down"', '"thumbs":"up"', literal=True))
                   .otherwise(line.str.replace(r'"thumbs":(null|"up")', '"thumbs":"down"')))
    regenerated = line.str.replace('"agent_response":"', '"agent_response":"(regenerated) ', literal=True)
    return lines.select(pl.when(pl.col("variant") % 2 == 0).then(late_thumbs).otherwise(regenerated))[:, 0]
