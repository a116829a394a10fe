"""Generic Bayesian inference engine: curvature, diagonal Laplace, evidence, type-II loop.

Knows nothing about neural architecture search: it works on named tensors ("sites") of any Pyro
model that follows the model-file convention (see ``docs/contracts.md``).
"""

from . import layerwise  # noqa: F401,E402  (registers the "layerwise" curvature backend)
from .ard_update import ArdUpdate, group_ard_update
from .curvature import BACKENDS, ForwardFn, diagonal_curvature, register_backend
from .diagonal_laplace import DiagonalLaplace, fit_diagonal_laplace
from .evidence import joint_terms, laplace_log_evidence, log_evidence
from .full_ard import FullArdResult, fit_full_ard, mackay_update
from .full_laplace import (
    FullLaplace,
    SiteLayout,
    fit_full_laplace,
    full_laplace_log_evidence,
    ggn_matrix,
)
from .ggn_lean import lean_ggn  # (registers the "ggn_lean" curvature backend)
from .type2 import Type2Config, Type2State, map_objective, run_type2

__all__ = [
    "BACKENDS",
    "ArdUpdate",
    "DiagonalLaplace",
    "FullArdResult",
    "ForwardFn",
    "FullLaplace",
    "SiteLayout",
    "Type2Config",
    "Type2State",
    "diagonal_curvature",
    "fit_diagonal_laplace",
    "fit_full_ard",
    "fit_full_laplace",
    "full_laplace_log_evidence",
    "ggn_matrix",
    "group_ard_update",
    "joint_terms",
    "laplace_log_evidence",
    "lean_ggn",
    "log_evidence",
    "mackay_update",
    "map_objective",
    "register_backend",
    "run_type2",
]
