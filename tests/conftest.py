"""Shared test settings: deterministic, quiet, small."""

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
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
