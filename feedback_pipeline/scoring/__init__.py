"""The scoring stage: `automated_scores`, every trace of a week scored.

`assets.py` (the asset and its checks), `week.py` (a week's rows and metadata, pure),
`deterministic.py` (shape scorers), `judge/` (the LLM judge and its cache),
`schemas.py` (the tables' Pandera models), `columns.py` (column groups derived from them).
"""
