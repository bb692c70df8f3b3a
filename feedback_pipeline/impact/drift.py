"""Input drift: the population stability index of a mix (intents, channels) between two weeks.

Pure arithmetic over counts; `loop_health` decides which weeks and mixes it compares.
"""

from collections.abc import Mapping, Sequence

import numpy as np

# PSI: bin shares below PSI_EPSILON count as PSI_EPSILON (an empty bin would make ln(q/p) infinite).
PSI_EPSILON = 1e-4
PSI_MODERATE, PSI_LARGE = 0.10, 0.25  # conventional: < 0.1 stable, 0.1–0.25 moderate, > 0.25 large


def population_stability_index(expected_counts: Mapping[str, float] | Sequence[float],
                               actual_counts: Mapping[str, float] | Sequence[float],
                               epsilon: float = PSI_EPSILON) -> float:
    """PSI = Σ (q − p)·ln(q/p) over bins, p and q the expected and actual shares.

    Mappings are aligned by key (a bin missing on one side has count 0); sequences by
    position. Shares below `epsilon` are raised to it, so a bin empty on one side adds a
    large but finite term. Read with PSI_MODERATE / PSI_LARGE.
    """
    if isinstance(expected_counts, Mapping) != isinstance(actual_counts, Mapping):
        raise TypeError("pass two mappings or two sequences")
    if isinstance(expected_counts, Mapping):
        keys = sorted(set(expected_counts) | set(actual_counts), key=str)
        e = np.array([expected_counts.get(k, 0) for k in keys], dtype=float)
        a = np.array([actual_counts.get(k, 0) for k in keys], dtype=float)
    else:
        e, a = np.asarray(expected_counts, dtype=float), np.asarray(actual_counts, dtype=float)
        if e.shape != a.shape:
            raise ValueError(f"bin counts differ in length: {e.shape} vs {a.shape}")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total on each side")
    p, q = np.maximum(e / e.sum(), epsilon), np.maximum(a / a.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))
