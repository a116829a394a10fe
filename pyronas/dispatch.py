"""Run any search strategy by name: BayesNAS and the baselines are peers.

:data:`RUNNERS` maps every name of :data:`pyronas.settings.STRATEGY_NAMES` to its run function;
this is the only module that imports both :mod:`pyronas.search` and :mod:`pyronas.strategies`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyronas.distributed import ranks_from_env, refuse_data_parallel
from pyronas.search import run_search
from pyronas.settings import STRATEGY_NAMES, SearchSettings
from pyronas.strategies import STRATEGIES

__all__ = ["RUNNERS", "run_search_cli", "run_strategy"]

RUNNERS: dict[str, Callable[..., Any]] = {"bayesnas": run_search, **STRATEGIES}
"""Strategy name -> ``fn(settings, out_dir)``, returning a result with ``out_dir``,
``genotype`` and ``seconds``."""
assert set(RUNNERS) == set(STRATEGY_NAMES), "every strategy name needs a runner"


def run_strategy(
    settings: SearchSettings | Mapping[str, Any], out_dir: str | Path | None = None
) -> Any:
    """Run the strategy the settings name (``strategy.name``) into ``out_dir`` (default
    ``run.out``). BayesNAS runs data-parallel under ``torchrun``; the baselines refuse it."""
    settings = SearchSettings.from_mapping(settings)
    if settings.strategy.name != "bayesnas":
        refuse_data_parallel(f"a {settings.strategy.name} search")
    return RUNNERS[settings.strategy.name](settings, out_dir)


def run_search_cli(
    config_path: str | Path | None,
    overrides: Mapping[str, Any],
    nb201: str | Path | None = None,
    nb201_epochs: int = 12,
) -> int:
    """``pyronas search``: load and check the settings, run the strategy, print the results.

    Every choice is checked before anything is read or written. For an nb201 search, also print
    the NAS-Bench-201 entry of the found cell; with ``nb201`` (an official benchmark file, read
    before the search so that a bad path fails at once) the entry is looked up there at
    ``nb201_epochs`` and ``nb201_lookup.json`` is rewritten.
    """
    from pyronas.nb201 import NB201Error, format_entry, open_table, run_lookup
    from pyronas.runs import compact_genotype
    from pyronas.settings import load_search_settings

    settings = load_search_settings(config_path, overrides)
    table = open_table(nb201, nb201_epochs) if nb201 is not None or nb201_epochs != 12 else None
    result = run_strategy(settings)
    if not ranks_from_env().is_main:  # a data-parallel search: rank 0 reports
        return 0
    print(f"genotype: {compact_genotype(result.genotype)}")
    try:
        entry = run_lookup(result.out_dir, table, write=table is not None)
    except NB201Error as err:  # no entry for the found cell: say so, the search stands
        entry = None
        print(f"no NAS-Bench-201 entry: {err}")
    if entry is not None:
        print(format_entry(entry))
    print(f"run folder: {result.out_dir} ({result.seconds:.0f} s)")
    return 0
