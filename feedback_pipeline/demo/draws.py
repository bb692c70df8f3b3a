"""Vectorized draws and id helpers the demo simulation is built from.

Generic numpy/Polars building blocks (one categorical draw per row, code lookups,
collision-free hex ids), with no knowledge of agents, releases or feedback: those
live in `scenario`, `simulation` and `feedback_and_tools`.
"""

from collections.abc import Sequence

import numpy as np
import polars as pl

_HEX_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype=np.uint8).reshape(256, 2)


def categorical(rng: np.random.Generator, probs: np.ndarray, group: np.ndarray | int, n: int) -> np.ndarray:
    """One draw per row from the row's group's distribution (rows of `probs`, summing to 1)."""
    cum = np.atleast_2d(probs).cumsum(1)
    cum[:, -1] = 1.0
    g = np.broadcast_to(np.asarray(group), (n,))
    return (rng.random(n)[:, None] >= cum[g]).sum(1)


def lookup(values: Sequence[str], codes: np.ndarray) -> pl.Series:
    """values[codes] as a polars String Series (much faster than a numpy unicode array)."""
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(codes, dtype=np.int64))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64, so distinct inputs give distinct ids."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hex_ids(prefix: str, values: np.ndarray, width: int = 16) -> pl.Series:
    """prefix + the last `width` hex digits of each uint64, without a Python loop."""
    raw = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.ascontiguousarray(_HEX_PAIRS[raw].reshape(-1, 16)[:, 16 - width:])
    return prefix + pl.Series(chars.view(f"S{width}").ravel()).cast(pl.String)
