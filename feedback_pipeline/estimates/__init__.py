"""The estimates stage: `quality_estimates`, failure and category rates per agent-week with
95 % intervals, re-weighted for the queue's design (and sharpened by the judge with PPI++).

- `assets`: the asset (load the week's queue, labels and scores; estimate; write).
- `labeled`: the labeled rows an estimate reads, one 0/1 column per metric.
- `stratum_stats`: per-stratum sizes and weighted moments.
- `design_based`, `estimators`: Hájek, Horvitz–Thompson and the naive rates shown beside them.
- `ppi`: stratified PPI++ with design weights; `intervals`: interval helpers shared by all.
- `schemas`: the table's Pandera model.

Not here: how the sample is drawn (`sampling`), how labels are imported (`labels`).
"""
