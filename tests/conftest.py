"""Shared test settings: deterministic, quiet, small."""

import os

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


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
