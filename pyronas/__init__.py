"""pyronas: Bayesian neural architecture search (BayesNAS) on Pyro and PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
