"""Generic Bayesian inference engine: curvature, diagonal Laplace, evidence, type-II loop.

Knows nothing about neural architecture search: it works on named tensors ("sites") of any Pyro
model that follows the model-file convention (see ``docs/contracts.md``).
"""

from . import layerwise  # noqa: F401,E402  (registers the "layerwise" curvature backend)
from .ard import ArdUpdate, group_ard_update
from .curvature import BACKENDS, ForwardFn, diagonal_curvature, register_backend
from .evidence import joint_terms, laplace_log_evidence, log_evidence
from .laplace import DiagonalLaplace, fit_diagonal_laplace
from .type2 import Type2Config, Type2State, map_objective, run_type2

__all__ = [
    "BACKENDS",
    "ArdUpdate",
    "DiagonalLaplace",
    "ForwardFn",
    "Type2Config",
    "Type2State",
    "diagonal_curvature",
    "fit_diagonal_laplace",
    "group_ard_update",
    "joint_terms",
    "laplace_log_evidence",
    "log_evidence",
    "map_objective",
    "register_backend",
    "run_type2",
]
