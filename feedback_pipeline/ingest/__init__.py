"""Stage 1, ingest: landing files -> `raw_traces` (one agent turn per row) and `ingest_quarantine`.

Where things are: `assets.py` (the weekly multi-asset and `landing_scan`), `schemas.py`
(the tables' Pandera models), `contract.py` (the landing contract's names and enums);
reading: `landing.py` (files), `manifest.py` (which files a week reads), `scan.py`
(which weeks changed files touch), `parse.py` (the orchestration), `arrow_fast.py`,
`lines.py`, `typed.py`, `rules.py` (typing and checking contract records),
`duplicates.py`, `quarantine.py`; writing: `storage.py`; reporting: `accounting.py`.
Tracing tools' exports (OTLP, Phoenix, Langfuse, LangSmith): `sources/`.
"""
