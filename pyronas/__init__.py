"""pyronas: Bayesian neural architecture search (BayesNAS) on Pyro and PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def load_run(path):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Load a search run folder (see :func:`pyronas.run_summary.load_run`)."""
    from pyronas.run_summary import load_run as _load_run

    return _load_run(path)
