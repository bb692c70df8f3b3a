"""The impact stage: release changes, their before/after figures, the loop's health, the weekly report.

Where things are: `assets.py` (the five assets and their checks), `load.py` (what they read),
`schemas.py` (the tables). Changes: `declared.py` (the home folder's file), `versions.py`
(which version is live when), `detect.py` (`release_changes`), `windows.py` (which rows
compare a change). Comparisons: `effects.py` (design-based means, CIs, BH), `turn_metrics.py`,
`label_metrics.py` (hajek and PPI++), `proxy_gaming.py`, `compare.py` (`impact_metrics`).
Eval replay: `agent.py`, `replay_requests.py`, `replay_cache.py`, `replay.py`, `paired.py` (McNemar rows);
weekly held-out replay of the live version: `heldout_replay.py`, its statistics `heldout_stats.py`.
Loop health: `drift.py` (PSI), `loop_signals.py`, `loop_flags.py`, `loop_health.py`.
Report: `weekly_report/`. Nothing here is imported by an earlier stage.
"""
