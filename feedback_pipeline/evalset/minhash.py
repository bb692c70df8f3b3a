"""Near-duplicate detection for eval-set cases: MinHash + LSH banding, vectorised.

Bit-for-bit what `datasketch` gives (MinHash scheme "affine32": SHA-1 of each character
shingle, MurmurHash3 finalizer, affine permutations mod 2³²; MinHashLSH's optimal bands;
"similar" = sharing a band and an estimated Jaccard ≥ threshold), so snapshots and their
hashes do not change; but in numpy over all texts at once instead of one Python object per
text and per shingle, which made dedup the slowest part of a weekly snapshot. datasketch is
still asked for its permutation parameters and band layout, so both stay its own.
"""

import hashlib
from functools import lru_cache

import numpy as np
import polars as pl

NUM_PERM = 128
SEED = 1
SCHEME = "affine32"


@lru_cache(maxsize=None)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash  # only for its parameters; a slow import

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


@lru_cache(maxsize=None)
def lsh_bands(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows per band) that MinHashLSH picks for the threshold (an integration: cached)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix before the permutations)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signatures(texts: pl.Series, shingle: int, num_perm: int = NUM_PERM,
                       seed: int = SEED) -> np.ndarray:
    """(len(texts), num_perm) uint32: each text's MinHash over its character `shingle`-grams.

    A text shorter than a shingle is one shingle (itself, even when empty), as in
    `[t[i:i + k] for i in range(max(1, len(t) - k + 1))]`. Texts and shingles repeat a lot,
    so each distinct shingle is hashed once and each distinct text reduced once.
    """
    a, b = _permutations(num_perm, seed)
    frame = texts.cast(pl.String).fill_null("").to_frame("text")
    distinct = frame.unique(maintain_order=True).with_row_index("t")
    pairs = (distinct.with_columns(
        pl.int_ranges(0, pl.max_horizontal(pl.col("text").str.len_chars().cast(pl.Int64) - shingle + 1, 1))
        .alias("offset"))
        .explode("offset")
        .select("t", pl.col("text").str.slice(pl.col("offset"), shingle).alias("shingle")))
    vocab = pairs.select(pl.col("shingle").unique()).with_row_index("s")
    pairs = pairs.join(vocab, on="shingle", how="left", maintain_order="left")  # still grouped by text
    digests = b"".join(hashlib.sha1(s.encode("utf-8")).digest()[:4] for s in vocab["shingle"].to_list())
    hashed = _fmix32(np.frombuffer(digests, dtype="<u4").astype(np.uint32))
    permuted = hashed * a.reshape(-1, 1) + b.reshape(-1, 1)  # (num_perm, shingles), wraps mod 2³²
    t, s = pairs["t"].to_numpy(), pairs["s"].to_numpy().astype(np.intp)
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    per_text = np.empty((num_perm, len(starts)), dtype=np.uint32)
    chunk = 4  # permutations per gather: a small buffer, reused, is much faster than one big one
    buffer = np.empty((chunk, len(s)), dtype=np.uint32)
    for k in range(0, num_perm, chunk):
        rows = buffer[:min(chunk, num_perm - k)]
        np.take(permuted[k:k + chunk], s, axis=1, out=rows)
        np.minimum.reduceat(rows, starts, axis=1, out=per_text[k:k + chunk])
    index = frame.join(distinct, on="text", how="left", maintain_order="left")["t"].to_numpy()
    return np.ascontiguousarray(per_text.T[index])


def greedy_duplicate_of(keys: pl.Series, signatures: np.ndarray, threshold: float,
                        first: int) -> list[str | None]:
    """For each item from `first` on, in order: the smallest key among the earlier *kept*
    items similar to it (it is then a duplicate), else None (it is then kept).

    Items before `first` are all kept. Similar = what MinHashLSH.query returns (a shared
    band) with an estimated Jaccard (share of equal signature values) ≥ `threshold`.
    Each item's fate depends on the fates before it, so the last step is a loop, but
    only over items that have an earlier similar one that may be kept.
    """
    n, num_perm = signatures.shape
    if n == first:
        return []
    # Of identical signatures only the first can be kept: a later one meets it (or what
    # made it a duplicate) first. Pairing only with those keeps clusters linear, not quadratic.
    _, first_seen = np.unique(signatures.view(np.dtype((np.void, signatures.itemsize * num_perm))).ravel(),
                              return_index=True)
    may_keep = np.zeros(n, dtype=bool)
    may_keep[:first] = True
    may_keep[first_seen] = True
    bands, rows = lsh_bands(threshold, num_perm)
    banded = signatures[:, :bands * rows].reshape(n, bands, rows)
    buckets = pl.DataFrame({"i": np.repeat(np.arange(n, dtype=np.int64), bands),
                            "band": np.tile(np.arange(bands, dtype=np.int64), n),
                            "key": _band_keys(banded).ravel()})
    pairs = (buckets.filter(pl.col("i") >= first)
             .join(buckets.filter(pl.Series(np.repeat(may_keep, bands))).rename({"i": "j"}), on=["band", "key"])
             .filter(pl.col("j") < pl.col("i")))
    i, j, band = (pairs[c].to_numpy() for c in ("i", "j", "band"))
    same_band = (banded[i, band] == banded[j, band]).all(axis=1)  # a key is a hash: check the band itself
    pairs = pairs.filter(pl.Series(same_band)).select("i", "j").unique()
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    equal = np.count_nonzero(signatures[i] == signatures[j], axis=1).astype(np.float64)
    pairs = pairs.filter(pl.Series(equal / float(num_perm) >= threshold)).sort("i", "j")

    names = keys.to_list()
    rank = keys.rank("ordinal").to_numpy()  # smallest key = smallest rank
    kept = np.ones(n, dtype=bool)
    out: list[str | None] = [None] * (n - first)
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, i[1:] != i[:-1], True]) if len(i) else []
    for start, end in zip(bounds[:-1], bounds[1:]):
        hits = j[start:end][kept[j[start:end]]]
        if hits.size:
            kept[i[start]] = False
            out[i[start] - first] = names[hits[np.argmin(rank[hits])]]
    return out


def _band_keys(banded: np.ndarray) -> np.ndarray:
    """(items, bands) uint64: a hash of each band's values (equal bands, equal keys)."""
    key = np.zeros(banded.shape[:2], dtype=np.uint64)
    for r in range(banded.shape[2]):
        key = (key ^ banded[:, :, r].astype(np.uint64)) * np.uint64(0x100000001B3)  # FNV-style, wraps
    return key
