"""Shared test settings: deterministic, quiet, small; loading the scripts under test."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tests use tiny tensors: one thread is faster than several that contend for two cores.
torch.set_num_threads(1)
os.environ.setdefault("PYRONAS_NO_PROGRESS", "1")


TINY_SEARCH = {
    "dataset": "digits",
    "train_size": 400,
    "channels": 4,
    "layers": 3,
    "batch_size": 50,
    "t_max": 2,
    "curvature_batches": 1,
    "bn_batches": 1,
    "posterior_draws": 3,
    "progress": False,
    "num_threads": 1,
}
"""A BayesNAS search of a few seconds on digits (tests override what they need)."""


ROOT = Path(__file__).resolve().parents[1]
"""The repository root."""


def load_script(relative: str) -> ModuleType:
    """Import a script of the repository (``experiments/...`` or ``benchmarks/...``, not a
    package) as a module, to call its functions or ``main`` in the test's process."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
