"""Search strategies beside BayesNAS, on the same run skeleton, supernet and run-folder format.

``STRATEGIES[name](settings, out_dir) -> StrategyResult`` with ``settings`` a
:class:`~pyronas.settings.SearchSettings` (or a nested or flat mapping of one):

``darts1`` / ``darts2``
    DARTS first / second order (:mod:`pyronas.strategies.darts`).
``random``
    Random search with weight sharing (``random_mode: ws``, default) or a plain random cell
    (``random_mode: plain``) (:mod:`pyronas.strategies.random_search`).

Their options are the ``strategy`` section of the settings
(:class:`~pyronas.settings.StrategySettings`). BayesNAS (:func:`pyronas.search.run_search`) is
their peer: :func:`pyronas.dispatch.run_strategy` runs any of the four by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyronas.runs import search_cost_gpu_days
from pyronas.strategies.darts import DARTS_DEFAULTS, darts_genotype, run_darts1, run_darts2
from pyronas.strategies.harness import StrategyResult
from pyronas.strategies.random_search import RANDOM_DEFAULTS, run_random, sample_random_genotype

StrategyFn = Callable[[Any, "str | Path | None"], StrategyResult]

STRATEGIES: dict[str, StrategyFn] = {
    "darts1": run_darts1,
    "darts2": run_darts2,
    "random": run_random,
}
"""Baselines by ``--strategy`` name (``bayesnas`` is :func:`pyronas.search.run_search`)."""

STRATEGY_DEFAULTS: Mapping[str, Any] = {**DARTS_DEFAULTS, **RANDOM_DEFAULTS}
"""The options the baselines read (the ``strategy`` section) and their defaults."""

__all__ = [
    "STRATEGIES",
    "STRATEGY_DEFAULTS",
    "StrategyResult",
    "darts_genotype",
    "sample_random_genotype",
    "search_cost_gpu_days",
]
