"""The vectorised near-duplicate search gives exactly what datasketch gives (so snapshot hashes hold)."""

import random

import numpy as np
import polars as pl
import pytest
from datasketch import MinHash, MinHashLSH

from feedback_pipeline.evalset.minhash import greedy_duplicate_of, lsh_bands, minhash_signatures

WORDS = "refund order parcel late broken card wrong size return label where is my the a for".split()


def shingles(text: str, k: int = 5) -> list[bytes]:
    return [text[i:i + k].encode() for i in range(max(1, len(text) - k + 1))]


def datasketch_greedy(keys: list[str], texts: list[str], threshold: float, first: int) -> list[str | None]:
    """The loop the snapshot used to run: index the kept items, then each later one in order."""
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    sketches = dict(zip(keys, MinHash.bulk([shingles(t) for t in texts], num_perm=128, seed=1,
                                            scheme="affine32")))
    for key in keys[:first]:
        lsh.insert(key, sketches[key])
    out = []
    for key in keys[first:]:
        m = sketches[key]
        hits = sorted(k for k in lsh.query(m) if sketches[k].jaccard(m) >= threshold)
        out.append(hits[0] if hits else None)
        if not hits:
            lsh.insert(key, m)
    return out


def near_copies(rng: random.Random, n: int) -> list[str]:
    """Clusters of texts that differ by a word or two, some exact repeats, some unrelated."""
    bases = [" ".join(rng.choices(WORDS, k=rng.randint(3, 14))) for _ in range(n // 6 + 1)]
    texts = []
    for _ in range(n):
        words = rng.choice(bases).split()
        for _ in range(rng.choice([0, 0, 1, 2])):
            words[rng.randrange(len(words))] = rng.choice(WORDS)
        texts.append(" ".join(words))
    return texts


def test_signatures_equal_datasketch_minhash():
    texts = ["", "a", "abcd", "abcde", "where is my refund | it is late", "x" * 300,
             "héllo wörld ünïcode 😀 emoji", "日本語のテキスト | こんにちは", "abcde"]
    ours = minhash_signatures(pl.Series(texts), 5)
    theirs = np.array([m.hashvalues for m in MinHash.bulk([shingles(t) for t in texts], num_perm=128,
                                                           seed=1, scheme="affine32")])
    assert ours.dtype == np.uint32 and (ours == theirs).all()


def test_bands_are_the_ones_minhashlsh_picks():
    for threshold in (0.5, 0.8, 0.9):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        assert lsh_bands(threshold) == (lsh.b, lsh.r)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("seed", [1, 2])
def test_duplicates_and_representatives_equal_the_datasketch_loop(threshold, seed):
    rng = random.Random(seed)
    texts = near_copies(rng, 400)
    keys = [f"{rng.getrandbits(64):016x}" for _ in texts]  # the smallest key wins, not the first
    for first in (0, 60):
        expected = datasketch_greedy(keys, texts, threshold, first)
        got = greedy_duplicate_of(pl.Series(keys), minhash_signatures(pl.Series(texts), 5), threshold, first)
        assert got == expected
        assert 0 < sum(d is not None for d in got) < len(got)


def test_nothing_after_the_kept_items_gives_nothing():
    signatures = minhash_signatures(pl.Series(["a b c d e f", "g h i j k"]), 5)
    assert greedy_duplicate_of(pl.Series(["k1", "k2"]), signatures, 0.8, first=2) == []
