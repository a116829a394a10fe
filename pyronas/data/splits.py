"""Seeded, stratified splits of a labelled set into parts of given sizes.

:func:`carve_splits` cuts an official training set into ``train`` / ``search`` / ``val``; it is
the only source of randomness in which images a split holds, and it depends on ``seed`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.5, 0.25, 0.25)
"""Default (train, search, val) shares of the official training set."""

HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
"""Data sets without an official test set (``digits``, an ``imagefolder`` tree without
``test/``, :func:`pyronas.data.from_torch_datasets` without ``test``) hold out this stratified
share as ``test``, drawn once with this seed whatever the run's seed is, so that runs with
different seeds are scored on the same images."""

CARVE_SEED_OFFSET = 1_000_003
"""Added to ``seed`` for the cut into (train, search, val), so that it is a stream independent
of the ``train_size`` subsample."""


def stratified_split(
    labels: np.ndarray | Sequence[int], counts: Sequence[int], seed: int
) -> list[np.ndarray]:
    """Split indices ``0..N-1`` into parts of given sizes, stratified by label, seeded.

    Items are shuffled within each class, then interleaved so that the ``r``-th item of a class
    of ``n_c`` items sits at position ``(r + u) / n_c`` of a common ordering (``u`` uniform
    jitter); the ordering is cut into consecutive parts. Every part then holds each class in
    proportion to its size, within one item.

    Parameters
    ----------
    labels
        ``(N,)`` class labels.
    counts
        Part sizes, adding up to at most ``N`` (items left over belong to no part).
    seed
        Seed of the shuffle.

    Returns
    -------
    list of np.ndarray
        Sorted index arrays, one per part, pairwise disjoint.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) > n:
        raise ValueError(f"split sizes {counts} must be >= 0 and add up to at most {n}")
    rng = np.random.default_rng(seed)
    keys = np.empty(n, dtype=np.float64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_c = idx.size
        keys[idx] = (rng.permutation(n_c) + rng.random(n_c)) / n_c
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def split_counts(n: int, sizes: Sequence[float]) -> list[int]:
    """Part sizes for ``n`` items from fractions or counts.

    ``sizes`` are fractions when they add up to 1 (e.g. ``(0.5, 0.25, 0.25)`` or ``(1, 0, 0)``),
    rounded by largest remainder so that the parts add up to ``n``; otherwise integer counts
    adding up to at most ``n``.
    """
    sizes = list(sizes)
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    if math.isclose(sum(sizes), 1.0, abs_tol=1e-6):
        exact = [s * n for s in sizes]
        counts = [math.floor(e) for e in exact]
        by_remainder = sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])
        for i in by_remainder[: n - sum(counts)]:
            counts[i] += 1
        return counts
    if not all(float(s).is_integer() for s in sizes):
        raise ValueError(f"split fractions must add up to 1, got {sizes} (sum {sum(sizes)})")
    if sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} add up to more than the {n} items available")
    return [int(s) for s in sizes]


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """``fractions`` as a tuple if they can describe (train, search, val), else a ValueError.

    Three shares adding up to 1, or three integer counts, all >= 0, the train one nonzero. What
    needs the data size (counts adding up to more than the items) is checked by
    :func:`carve_splits`.
    """
    fractions = tuple(fractions)
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, search, val), got {fractions}")
    if any(f < 0 for f in fractions):
        raise ValueError(f"split sizes must be >= 0, got {list(fractions)}")
    total = sum(fractions)
    if not math.isclose(total, 1.0, abs_tol=1e-6) and not all(
        float(f).is_integer() for f in fractions
    ):
        raise ValueError(f"split fractions must add up to 1, got {list(fractions)} (sum {total})")
    if fractions[0] == 0:
        raise ValueError(f"fractions {fractions} leave the train split empty")
    return fractions


def carve_splits(
    labels: np.ndarray, train_size: int | None, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Indices of (train, search, val) in the official train set ``labels``.

    A stratified subsample of ``train_size`` items is drawn first (all items if None), then cut
    into the three parts with a second, independent random stream (``seed +``
    :data:`CARVE_SEED_OFFSET`).

    Parameters
    ----------
    labels
        ``(N,)`` labels of the official training set.
    train_size
        Items to keep before the cut; None keeps all ``N``.
    fractions
        ``(train, search, val)`` shares adding up to 1, or integer counts (see
        :func:`split_counts`).
    seed
        Seeds both streams.

    Returns
    -------
    list of np.ndarray
        Three sorted, disjoint index arrays into ``labels``; the first is never empty.
    """
    fractions = check_fractions(fractions)
    n = labels.shape[0]
    if train_size is None:
        pool = np.arange(n)
    elif not 0 < train_size <= n:
        raise ValueError(
            f"train_size must be in [1, {n}] (the official train set), got {train_size}"
        )
    else:
        pool = stratified_split(labels, [train_size], seed)[0]
    counts = split_counts(pool.size, fractions)
    if counts[0] == 0:
        raise ValueError(f"fractions {tuple(fractions)} leave the train split empty")
    parts = stratified_split(labels[pool], counts, seed + CARVE_SEED_OFFSET)
    return [pool[p] for p in parts]


def hold_out_test(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, test)``: sorted indices of a fixed stratified :data:`HOLDOUT_FRACTION` of
    ``labels`` ``(N,)`` (seed :data:`HOLDOUT_SEED`) and of the items left."""
    counts = split_counts(len(labels), [1 - HOLDOUT_FRACTION, HOLDOUT_FRACTION])
    rest, test = stratified_split(labels, counts, HOLDOUT_SEED)
    return rest, test
