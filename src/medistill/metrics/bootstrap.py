"""The bootstrap resamples every confidence interval in medistill draws.

Resample ``b`` is row ``b`` of ``np.random.default_rng(seed).integers(0, n, (n_resamples, n))``;
:func:`resample_chunks` yields those rows in blocks so memory stays bounded. Drawing in blocks
gives the same rows as one draw, so every metric seeded alike sees the same resamples (which
is what makes two models' intervals, and their paired difference, comparable).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: upper bound on resampled indices held in memory at once (int64: 8 bytes each -> ~32 MiB)
MAX_CHUNK_ELEMENTS = 4_000_000


def resample_chunks(n: int, n_resamples: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks of bootstrap index rows, shape ``(<= chunk, n)``, ``n_resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(int(n_resamples), MAX_CHUNK_ELEMENTS // max(1, n)))
    done = 0
    while done < n_resamples:
        size = min(chunk, int(n_resamples) - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The ``(1 -/+ confidence) / 2`` percentile pair of bootstrap samples."""
    alpha = 1.0 - float(confidence)
    low, high = np.percentile(samples, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(low), float(high)


def resampled_means(values: np.ndarray, n_resamples: int, seed: int = 0) -> np.ndarray:
    """The NaN-mean of ``values`` in each resample (NaN where a resample has no defined value)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    defined = ~np.isnan(v)
    filled, ok = np.where(defined, v, 0.0), defined.astype(np.float64)
    means: list[np.ndarray] = []
    for idx in resample_chunks(v.size, n_resamples, seed):
        cnt = ok[idx].sum(1)
        means.append(np.divide(filled[idx].sum(1), cnt, out=np.full(len(cnt), np.nan),
                               where=cnt > 0))
    return np.concatenate(means)
