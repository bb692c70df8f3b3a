"""The scoring tables are said once: column groups, dtypes and the judge cache's DDL derive
from the Pandera models, and loading the scoring stage does not import openai."""

import subprocess
import sys

import duckdb
import polars as pl

from feedback_pipeline.frames import polars_schema
from feedback_pipeline.ingest.schemas import RawTraces
from feedback_pipeline.scoring.columns import CARRIED_FROM_TRACES, DETERMINISTIC, JUDGE, JUDGE_SCHEMA
from feedback_pipeline.scoring.deterministic import deterministic_scores
from feedback_pipeline.scoring.judge import JudgeCache
from feedback_pipeline.scoring.schemas import AutomatedScores, JudgeCacheTable


def test_column_groups_partition_the_model_in_its_order():
    scores = polars_schema(AutomatedScores)
    assert (*CARRIED_FROM_TRACES, *DETERMINISTIC, *JUDGE) == tuple(scores)
    assert len(CARRIED_FROM_TRACES) == 17 and len(DETERMINISTIC) == 9 and len(JUDGE) == 11
    assert JUDGE_SCHEMA["judge_selection_prob"] == pl.Float64 and JUDGE_SCHEMA["judge_cached"] == pl.Boolean


def test_carried_columns_keep_the_raw_traces_dtypes():
    traces = polars_schema(RawTraces)
    scores = polars_schema(AutomatedScores)
    assert {c: scores[c] for c in CARRIED_FROM_TRACES} == {c: traces[c] for c in CARRIED_FROM_TRACES}


def test_deterministic_scorers_produce_exactly_the_deterministic_columns():
    assert tuple(e.meta.output_name() for e in deterministic_scores()) == DETERMINISTIC


def test_judge_cache_table_is_the_model():
    con = duckdb.connect()
    JudgeCache(con)
    described = con.sql("DESCRIBE judge_cache").fetchall()  # name, type, null, key, default, extra
    assert [r[0] for r in described] == list(polars_schema(JudgeCacheTable))
    by_name = {r[0]: r for r in described}
    assert by_name["cache_key"][2] == "NO"  # unique by the writes and reads below, not a PRIMARY KEY (DuckLake has none)
    assert by_name["created_at"][1] == "TIMESTAMP WITH TIME ZONE" and by_name["created_at"][4] == "current_timestamp"
    assert {r[0] for r in described if r[2] == "YES"} == {"failure_category", "rationale",
                                                          "prompt_tokens", "completion_tokens"}
    assert JudgeCache.COLUMNS == tuple(polars_schema(JudgeCacheTable))[:-1]
    assert dict(JudgeCache.empty().schema) == {c: polars_schema(JudgeCacheTable)[c] for c in JudgeCache.COLUMNS}


def test_judge_cache_keeps_one_verdict_per_key_even_after_a_race():
    con = duckdb.connect()
    cache = JudgeCache(con)
    schema = polars_schema(JudgeCacheTable)
    row = {c: None for c in JudgeCache.COLUMNS} | {"cache_key": "k1", "verdict": "pass"}
    frame = pl.DataFrame([row]).cast({c: schema[c] for c in JudgeCache.COLUMNS}).select(JudgeCache.COLUMNS)
    frame = frame.with_columns([pl.lit("x").alias(c) for c in JudgeCache.COLUMNS
                                if c not in ("cache_key", "verdict") and schema[c] == pl.String
                                and not JudgeCacheTable.to_schema().columns[c].nullable])
    frame = frame.with_columns([pl.lit(0).cast(schema[c]).alias(c) for c in JudgeCache.COLUMNS
                                if schema[c] != pl.String and not JudgeCacheTable.to_schema().columns[c].nullable])
    assert cache.put_many(frame) == 1
    assert cache.put_many(frame) == 0  # a key already cached is kept, not duplicated
    # Two writers that raced on a DuckLake may both have inserted the key: it is read once.
    cols = ", ".join(JudgeCache.COLUMNS)
    con.register("_dup", frame)
    con.execute(f"INSERT INTO judge_cache ({cols}) SELECT {cols} FROM _dup")
    assert cache.get_many(["k1"]).height == 1


def test_loading_the_scoring_stage_does_not_import_openai():
    code = ("import sys, feedback_pipeline.scoring.assets, feedback_pipeline.scoring.judge; "
            "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_the_definitions_imports_no_heavy_library_and_pandera_checks_still_work():
    """Every run and sensor process loads the definitions: no statistics, plotting, LLM client
    or pandas at load time (pandera is imported as a polars-only install sees it)."""
    code = ("import sys, feedback_pipeline.definitions; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pandas', 'scipy', 'statsmodels', 'matplotlib', 'openai', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import feedback_pipeline.definitions, polars as pl, pandera.polars as pa\n"
            "class M(pa.DataFrameModel):\n    x: int = pa.Field(ge=0, isin=[1, 2])\n"
            "try:\n    M.validate(pl.DataFrame({'x': [1, -1]}), lazy=True)\n"
            "except pa.errors.SchemaErrors as e:\n    print(len(e.failure_cases))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"
