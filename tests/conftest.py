"""Shared test settings: deterministic, quiet, small."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tests use tiny tensors: one thread is faster than several that contend for two cores.
torch.set_num_threads(1)
os.environ.setdefault("PYRONAS_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state."""
    import random

    import numpy as np

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
