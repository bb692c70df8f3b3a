"""The evalset stage: a held-out eval set per agent, one immutable snapshot a week.

Read in data-flow order: `known_labels` (labels a week may use) → `candidates` (labeled
traces of the week or before) → `snapshot` (one agent's week: `dedup`, `selection`,
`redaction`, `ids`) → `week` (every agent, checked against stored hashes) →
`canonical`/`manifest`/`diff` (hash and description) → `exports`/`preference_pairs`
(files) ; `store` reads and writes the warehouse, `assets` is the Dagster asset,
`schemas` the Pandera models. Import the module you need; this package exports nothing.
"""
