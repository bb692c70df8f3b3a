"""The bundled demo world: synthetic agent traces whose true outcomes are known.

The public API of the demo world, and nothing else: `generate_turns` simulates
traces and their hidden truth in memory (vectorized; the benchmarks use it for a
million traces); `generate_world` writes them as landing files in a mix of formats,
with planted releases, malformed records and duplicates, plus the truth files that
only demo simulators and tests read, never the pipeline. The parts live in
`scenario` (agents, releases), `simulation` (turns and truth), `feedback_and_tools`,
`draws`, `landing_files`, `malformed_records`, `releases_report` and `world_text`.
"""

import json
import shutil
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from feedback_pipeline.demo.landing_files import landing_lines, place_in_files, write_file, write_landing
from feedback_pipeline.demo.malformed_records import MALFORMED_KINDS
from feedback_pipeline.demo.releases_report import releases_report
from feedback_pipeline.demo.scenario import AGENTS, RELEASES, VERSION_DIMENSIONS, arms
from feedback_pipeline.demo.simulation import TRUTH_COLUMNS, simulate, turns_and_truth
from feedback_pipeline.demo.world_text import CATEGORIES

# Imported from here by tests, benchmarks, `run` and `fake_agent` (which takes `_arms`).
__all__ = [
    "AGENTS", "CATEGORIES", "DEMO_FIRST_WEEK", "MALFORMED_KINDS", "RELEASES", "TRUTH_COLUMNS",
    "VERSION_DIMENSIONS", "generate_turns", "generate_world",
]

DEMO_FIRST_WEEK = date(2026, 9, 28)  # a Monday; 8 weeks end with the week of 2026-11-16
_arms = arms


def generate_turns(n_turns: int, seed: int, first_week: date = DEMO_FIRST_WEEK, weeks: int = 1,
                   agents: Sequence[str] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(turns in the landing-contract shape, their hidden truth), deterministic by seed.

    Turns have the nested `feedback` struct and `tool_calls` list, and `timestamp` as an
    ISO-8601 string; the truth frame has TRUTH_COLUMNS. Weeks count from `first_week`,
    and the planted RELEASES apply by week offset from it.
    """
    return turns_and_truth(simulate(n_turns, seed, first_week, weeks, agents))


def generate_world(home: Path, seed: int = 7, weeks: int = 8, first_week: date = DEMO_FIRST_WEEK,
                   turns_per_week: int = 20_000) -> dict:
    """Write the demo landing files and truth files under `home`; return what was written.

    Replaces home/landing/demo, home/landing/resend and home/demo_truth. Same seed, same bytes.
    """
    home = Path(home)
    world = simulate(turns_per_week * weeks, seed, first_week, weeks, None)
    rng = np.random.default_rng([seed, first_week.toordinal(), weeks, 1])
    world = place_in_files(world, first_week, weeks, rng)
    for sub in ("landing/demo", "landing/resend", "demo_truth"):
        shutil.rmtree(home / sub, ignore_errors=True)
    lines, bad = landing_lines(world, rng)
    files = write_landing(home, world, lines, rng)
    valid = world.filter(~pl.col("row").is_in(pl.Series(bad, dtype=pl.UInt32)))
    truth_dir = home / "demo_truth"
    write_file(truth_dir / "turn_truth.parquet", valid.select(TRUTH_COLUMNS).sort("trace_id"))
    log = lines.filter(pl.col("kind").is_not_null()).select(
        source_file="file", source_line="source_line", kind="kind", trace_id="trace_id")
    write_file(truth_dir / "injected_records.parquet", log)
    report = releases_report(valid, seed, first_week, weeks)
    (truth_dir / "releases.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    counts = dict(log.group_by("kind").len().iter_rows())
    return {
        "turns_written": valid.height,
        "records_written": valid.height + sum(counts.get(k, 0) for k in (
            *MALFORMED_KINDS, "exact_duplicate", "conflicting_duplicate")),
        "malformed_written": {k: counts.get(k, 0) for k in MALFORMED_KINDS},
        "duplicates_written": {"exact": counts.get("exact_duplicate", 0),
                               "conflicting": counts.get("conflicting_duplicate", 0)},
        "blank_lines_written": counts.get("blank_line", 0),
        "extra_field_records": int(valid["extra_field"].sum()),
        "files": files,
        "truth_files": ["demo_truth/injected_records.parquet", "demo_truth/releases.json",
                        "demo_truth/turn_truth.parquet"],
    }
