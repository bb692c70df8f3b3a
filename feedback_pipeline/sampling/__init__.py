"""The sampling stage: `annotation_queue`, the week's stratified sample for human labels,
with the exact inclusion probability of every item.

- `assets`: the asset (read scores, draw, write, export) and its checks.
- `strata`, `allocation`, `optimal`, `priors`: which stratum a trace is in and how many
  draws each stratum gets (the default `optimal` design learns from last week's labels).
- `design`, `user_cap`: the draw itself and the heavy-clicker cap's exact factor.
- `inclusion_check`: the blocking check that every π is the design's.
- `planning`: labels needed next week for a given precision (queue metadata).
- `exports`, `queue_text`: the files annotators open. `schemas`: the table's Pandera model.

Not here: the estimators that re-weight the sample (`estimates`), Label Studio's push (`labels`).
"""
