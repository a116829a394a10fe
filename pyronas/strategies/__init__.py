"""Search strategies beside BayesNAS, on the same supernet, data splits and run-folder format.

``STRATEGIES[name](cfg, out_dir) -> StrategyResult`` with ``cfg`` a resolved search config:

``darts1`` / ``darts2``
    DARTS first / second order (:mod:`pyronas.strategies.darts`).
``random``
    Random search with weight sharing (``random_mode: ws``, default) or a plain random cell
    (``random_mode: plain``) (:mod:`pyronas.strategies.random_search`).

Extra config keys and their defaults: :data:`STRATEGY_DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyronas.strategies.darts import DARTS_DEFAULTS, darts_genotype, run_darts1, run_darts2
from pyronas.strategies.harness import StrategyResult, search_cost_gpu_days
from pyronas.strategies.random_search import RANDOM_DEFAULTS, run_random, sample_random_genotype

StrategyFn = Callable[[dict[str, Any], "str | Path | None"], StrategyResult]

STRATEGIES: dict[str, StrategyFn] = {
    "darts1": run_darts1,
    "darts2": run_darts2,
    "random": run_random,
}
"""Baselines by ``--strategy`` name (``bayesnas`` is :func:`pyronas.search.run_search`)."""

STRATEGY_DEFAULTS: dict[str, Any] = {**DARTS_DEFAULTS, **RANDOM_DEFAULTS}
"""Config keys the baselines read beyond :data:`pyronas.search.SEARCH_DEFAULTS`."""

__all__ = [
    "STRATEGIES",
    "STRATEGY_DEFAULTS",
    "StrategyResult",
    "darts_genotype",
    "sample_random_genotype",
    "search_cost_gpu_days",
]
