"""Writing the simulated world as landing files, with the defects a real feed has.

Which file each agent-week lands in (gzip/plain JSONL, Parquet), the JSON lines with
malformed records, duplicates, conflicting re-sends and blank lines planted at known
positions, and the writing itself. How a malformed record is made lives in
`malformed_records`; the truth files are written by `world.generate_world`.
"""

import gzip
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from feedback_pipeline.demo.malformed_records import MALFORMED_KINDS, conflicting_resend, corrupt
from feedback_pipeline.demo.scenario import AGENTS
from feedback_pipeline.demo.simulation import turn_record, turns_and_truth

_LOCALES = ("en-GB", "en-US", "de-DE", "fr-FR", "es-ES", "pt-BR")
_JUNK = np.concatenate([np.arange(0x20, 0x7F), np.setdiff1d(np.arange(0x80, 0xC0), [0x85]),
                        np.arange(0xF8, 0x100)]).astype(np.uint8)  # never valid UTF-8, never a line break


def _landing_file(week: date, week_offset: int, agent_id: str) -> str:
    """Where one agent-week lands (relative to landing/): mostly gzip JSONL, some plain, some Parquet."""
    folder = f"demo/{week.isoformat()}"
    if agent_id == "refunds" and week_offset % 4 == 2:
        return f"{folder}/{agent_id}.parquet"
    if agent_id == "travel" and week_offset % 3 == 1:
        return f"{folder}/{agent_id}.jsonl"
    if agent_id == "dental_front_desk" and week_offset == 5:
        return f"{folder}/{agent_id}/part-{{part}}.jsonl.gz"  # split in two by weekday
    return f"{folder}/{agent_id}.jsonl.gz"


def place_in_files(world: pl.DataFrame, first_week: date, weeks: int, rng: np.random.Generator) -> pl.DataFrame:
    """The simulated rows with their landing `file`, `week_offset`, `row` (their order in the
    files) and whether they carry an unknown `extra_field`."""
    plan = pl.DataFrame(
        [{"week": first_week + timedelta(weeks=w), "agent_id": a, "file": _landing_file(
            first_week + timedelta(weeks=w), w, a), "week_offset": w} for w in range(weeks) for a in AGENTS],
        schema_overrides={"week": pl.Date})
    world = world.join(plan, on=["week", "agent_id"]).with_columns(file=pl.col("file").str.replace(
        "{part}", pl.when(pl.from_epoch("ts_ms", time_unit="ms").dt.weekday() <= 3).then(pl.lit("000"))
        .otherwise(pl.lit("001")), literal=True)).sort("file", "ts_ms", "trace_id").with_row_index("row")
    parquet = pl.col("file").str.ends_with(".parquet")
    return world.with_columns(extra_field=pl.when(parquet).then(pl.col("week_offset") == 2)
                              .otherwise(pl.Series(rng.random(world.height) < 0.015)))


def _json_lines(frame: pl.DataFrame) -> pl.Series:
    """Each simulated row as one JSON object in the landing contract."""
    return frame.select(pl.struct(turn_record()).struct.json_encode())[:, 0]


def _pick_rows(rng: np.random.Generator, candidates: np.ndarray, eligible: np.ndarray, n: int) -> np.ndarray:
    pool = candidates[eligible[candidates]]
    if len(pool) < n:
        raise ValueError("world too small for the requested malformed/duplicate records")
    return np.sort(rng.choice(pool, n, replace=False))


def landing_lines(world: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Every JSONL line with its file, 1-based line number and injected `kind` (null if clean),
    and the world rows that were written malformed (their traces never reach the pipeline)."""
    n = world.height
    jsonl = ~world["file"].str.ends_with(".parquet").to_numpy()
    rows = np.flatnonzero(jsonl)
    n_bad = max(len(MALFORMED_KINDS), round(0.001 * len(rows)))
    n_exact, n_conflict = max(3, round(0.002 * len(rows))), max(2, round(0.0005 * len(rows)))
    n_blank = max(3, round(0.0003 * len(rows)))

    kinds = np.array(MALFORMED_KINDS)[rng.permutation(np.arange(n_bad) % len(MALFORMED_KINDS))]
    free = np.ones(n, dtype=bool)
    bad = np.empty(n_bad, dtype=np.int64)
    needs_tool = kinds == "bad_tool_status"
    bad[needs_tool] = _pick_rows(rng, rows, world["n_tool_calls"].to_numpy() > 0, int(needs_tool.sum()))
    free[bad[needs_tool]] = False
    bad[~needs_tool] = _pick_rows(rng, rows, free, int((~needs_tool).sum()))
    free[bad] = False
    exact = _pick_rows(rng, rows, free, n_exact)
    free[exact] = False
    conflict = _pick_rows(rng, rows, free, n_conflict)
    blank_before = _pick_rows(rng, rows, np.ones(n, dtype=bool), n_blank)

    kind = pl.Series(dtype=pl.String).extend_constant(None, n).scatter(bad, pl.Series(kinds))
    base = world.select("row", "trace_id", "file", "week", "ts_ms", "latency_ms", "extra_field").with_columns(
        line=_json_lines(world), kind=kind, variant=pl.Series(rng.integers(0, 4, n)))
    base = base.with_columns(line=pl.when("extra_field").then(
        pl.col("line").str.strip_suffix("}") + ',"locale":"'
        + pl.lit(pl.Series(_LOCALES).gather(rng.integers(0, len(_LOCALES), n))) + '"}').otherwise("line"))
    base = base.with_columns(base["line"].scatter(bad, corrupt(base[bad])))
    resend = pl.concat([
        base[exact].with_columns(kind=pl.lit("exact_duplicate")),
        base[conflict].with_columns(kind=pl.lit("conflicting_duplicate"), line=conflicting_resend(base[conflict])),
    ]).sort("ts_ms", "trace_id").with_columns(
        file=pl.lit("resend/") + pl.col("week").cast(pl.String) + "/resend.jsonl", order=pl.int_range(pl.len()))
    position = pl.col("row").cast(pl.Int64) * 2  # a blank line goes just before its row
    blanks = base[blank_before].with_columns(kind=pl.lit("blank_line"), line=pl.lit(""),
                                             trace_id=pl.lit(None, pl.String), order=position)
    records = base.filter(pl.Series(jsonl)).with_columns(order=position + 1)
    lines = pl.concat([records, blanks, resend], how="diagonal").sort("file", "order")
    return lines.with_columns(source_line=pl.int_range(1, pl.len() + 1).over("file")), bad


def write_landing(home: Path, world: pl.DataFrame, lines: pl.DataFrame, rng: np.random.Generator) -> list[str]:
    """Write the JSONL lines (gzip by name, invalid UTF-8 spliced in) and the Parquet agent-weeks;
    return the written paths relative to home, sorted."""
    landing, written = home / "landing", []
    for (path,), group in lines.group_by("file", maintain_order=True):
        data = ("\n".join(group["line"].to_list()) + "\n").encode()
        for token in group.filter(pl.col("kind") == "invalid_utf8")["line"].to_list():
            junk = rng.choice(_JUNK, int(rng.integers(12, 60))).tobytes()
            data = data.replace(token.encode(), (b'{"trace_id":"' if rng.random() < .5 else b"") + b"\xff" + junk)
        written.append(write_file(landing / path, gzip.compress(data, 6, mtime=0) if path.endswith(".gz") else data))
    for (path,), group in world.filter(pl.col("file").str.ends_with(".parquet")).group_by(
            "file", maintain_order=True):
        turns, _ = turns_and_truth(group)
        if group["extra_field"].all():
            turns = turns.with_columns(client_version=pl.lit("ios-5.2.1"))  # an unknown extra column
        written.append(write_file(landing / path, turns))
    return sorted(p.relative_to(home).as_posix() for p in written)


def write_file(target: Path, content: bytes | pl.DataFrame) -> Path:
    """Write bytes, or a frame as zstd Parquet, creating the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, pl.DataFrame):
        content.write_parquet(target, compression="zstd")
    else:
        target.write_bytes(content)
    return target
