"""Memory-lean exact generalised Gauss-Newton curvature over sites: diagonal and full matrix.

The GGN of the mean per-sample negative log likelihood of a batch of ``B`` samples is

    G = 1/B sum_n J_n^T Lambda_n J_n,

with ``J_n`` (out, D) the Jacobian of sample n's output with respect to the ``D`` flattened site
elements and ``Lambda_n`` (out, out) the Hessian of its NLL with respect to that output. Write
``Lambda_n`` through a symmetric factor, ``Lambda_n = Q_n Q_n^T = sum_c q_nc q_nc^T``:

* categorical (softmax over C classes): ``Lambda = diag(p) - p p^T`` and
  ``Q = diag(sqrt p) - p sqrt(p)^T``, i.e. column ``q_c = sqrt(p_c) (e_c - p)``, C columns
  (``Q Q^T = diag(p) - 2 p p^T + p (sum_c p_c) p^T = diag(p) - p p^T``);
* Gaussian with standard deviation sigma: ``Lambda = I / sigma^2`` and ``Q = I / sigma``, one
  column per output element.

Then ``G = 1/B sum_n sum_c g_nc g_nc^T`` with the per-sample gradients ``g_nc = J_n^T q_nc``,
so ``diag(G) = 1/B sum_{n,c} g_nc^2``. Per column c the B vectors ``g_nc`` come from ONE
ordinary backward pass:

1. Every site tensor is expanded to a leading batch dim, ``s -> S`` with ``S[n] = s`` (a leaf
   of shape (batch, *site_shape)), and sample n of the forward uses only its own copy ``S[n]``.
   The output of sample n then depends on ``S[n]`` alone, so the gradient of
   ``sum_n q_nc^T f_n`` with respect to ``S`` has row n equal to ``J_n^T q_nc``: per-sample
   gradients from one backward of a summed scalar, with no per-sample Jacobian stored.
2. The forward is run once with autograd recording and the graph is kept; the backward is
   repeated once per factor column with the (detached) column as cotangent. Cost: one forward
   and C backward passes (C = classes, or output elements for a Gaussian); memory: one graph of
   the batch, as in a training step, plus the ``B x D`` gradients of one column at a time, and
   the ``D x D`` matrix when asked for.

How sample n gets its own sites: a forward that broadcasts a leading batch dim of the sites
itself (it multiplies the feature maps of sample n by ``sites[k][n]``) declares it with an
attribute ``batched_sites = True`` (or the caller passes ``batched_sites=True``) and is called
as ``forward(S, x)``. Any other forward (e.g. one that checks the site shapes) is mapped over
the samples with ``torch.func.vmap(forward, in_dims=(0, 0))`` applied to single samples: vmap
batches the forward only, the graph it records is the ordinary batched graph and the backward
passes are ordinary ``torch.autograd.grad`` calls. ``pyronas.supernet.SuperNet`` is such a
forward: it checks the switch shapes and multiplies each op output by a scalar switch element,
so it takes the vmap path. (The reference ``ggn`` backend instead maps ``jacrev`` over samples,
i.e. a backward batched over ``chunk x C`` rows at once.)

Why the expansion: a vjp of the batched output with SHARED sites, applied to the columns,
returns ``sum_n J_n^T q_nc``, and the square of a sum is not the sum of squares the diagonal
needs; giving every sample its own copy of the sites keeps the B terms apart at no extra
backward cost.

Samples must be independent (eval-mode batch norm): pass the network as ``module`` to have it
put in eval mode and its parameters excluded from the graph during the computation.

This module registers the curvature backend ``"ggn_lean"`` on import; it is exact (the same
quantity as ``"ggn"``, up to rounding).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from .curvature import BACKENDS, ForwardFn, check_likelihood, eval_mode, register_backend

__all__ = [
    "LeanGGN",
    "frozen_parameters",
    "ggn_lean_backend",
    "hessian_factor_columns",
    "lean_ggn",
    "per_sample_output",
]


@dataclass
class LeanGGN:
    """GGN of the mean NLL of one batch, from :func:`lean_ggn`.

    Attributes
    ----------
    diagonal : dict[str, Tensor]
        ``diag(G)`` per site, site-shaped.
    matrix : Tensor or None
        (D, D) full GGN over the flattened sites (sites in mapping order, each flattened in
        row-major order), or ``None`` when not asked for.
    num_samples : int
        Batch size B the sums were divided by.
    """

    diagonal: dict[str, Tensor]
    matrix: Tensor | None
    num_samples: int


@contextmanager
def frozen_parameters(module: nn.Module | None) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter of ``module``, restoring the flags on exit.

    The forward then records no graph to the weights, which are not differentiated.
    """
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def hessian_factor_columns(
    output: Tensor, likelihood: str, noise_std: float = 1.0
) -> Iterator[Tensor]:
    """Columns of a symmetric factor Q_n of the output Hessian Lambda_n = Q_n Q_n^T, per sample.

    Parameters
    ----------
    output : Tensor
        (batch, class) logits for ``"categorical"``; (batch, ...) means for ``"gaussian"``.
    likelihood : {"categorical", "gaussian"}
    noise_std : float
        Gaussian standard deviation.

    Yields
    ------
    Tensor
        Output-shaped (batch, ...) detached tensors: column c of every sample's factor,
        ``sqrt(p_c) (e_c - p)`` (softmax, C columns) or ``e_k / sigma`` (Gaussian, one column
        per output element k).
    """
    check_likelihood(likelihood)
    out = output.detach()
    if likelihood == "categorical":
        p = torch.softmax(out, -1)
        root = p.sqrt()
        num_classes = out.shape[-1]
        for c in range(num_classes):
            onehot = F.one_hot(torch.tensor(c, device=out.device), num_classes).to(out.dtype)
            yield root[..., c : c + 1] * (onehot - p)
        return
    batch, numel = out.shape[0], out[0].numel()
    for k in range(numel):
        col = out.new_zeros(batch, numel)
        col[:, k] = 1.0 / noise_std
        yield col.reshape(out.shape)


def per_sample_output(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    batched_sites: bool | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Run the forward with one copy of the sites per sample (autograd recording).

    Parameters
    ----------
    forward : ForwardFn
        ``forward(sites, x) -> output``.
    sites : Mapping[str, Tensor]
        Site values, site-shaped.
    x : Tensor
        (batch, ...) inputs.
    batched_sites : bool, optional
        The forward accepts sites of shape (batch, *site_shape), sample n using row n, and is
        called directly. ``None``: read the attribute ``forward.batched_sites`` (default
        False); otherwise the forward is mapped over single samples with ``torch.func.vmap``.

    Returns
    -------
    expanded : dict[str, Tensor]
        Leaves (batch, *site_shape) that require grad, row n a copy of the site.
    output : Tensor
        (batch, ...) output; sample n depends on row n of ``expanded`` only.
    """
    if batched_sites is None:
        batched_sites = bool(getattr(forward, "batched_sites", False))
    batch = x.shape[0]
    expanded = {
        k: v.detach().unsqueeze(0).expand(batch, *v.shape).clone().requires_grad_(True)
        for k, v in sites.items()
    }
    with torch.enable_grad():
        if batched_sites:
            output = forward(expanded, x)
        else:

            def single(s: dict[str, Tensor], xi: Tensor) -> Tensor:
                return forward(s, xi.unsqueeze(0)).squeeze(0)

            output = vmap(single, in_dims=(0, 0))(expanded, x)
    if output.shape[0] != batch:
        raise ValueError(
            f"forward returned an output with leading dim {output.shape[0]}, expected the "
            f"batch size {batch}"
        )
    return expanded, output


def lean_ggn(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    likelihood: str = "categorical",
    noise_std: float = 1.0,
    module: nn.Module | None = None,
    *,
    full: bool = False,
    batched_sites: bool | None = None,
) -> LeanGGN:
    """Exact GGN of the mean NLL of one batch, from per-sample gradients (module docstring).

    Parameters
    ----------
    forward : ForwardFn
        ``forward(sites, x) -> output``; network weights closed over and held fixed.
    sites : Mapping[str, Tensor]
        Site values (any shapes); ``D`` = total number of elements.
    x : Tensor
        (batch, ...) inputs of one batch.
    likelihood : {"categorical", "gaussian"}
    noise_std : float
        Gaussian standard deviation.
    module : nn.Module, optional
        The network: in eval mode and with its parameters frozen during the computation.
        Without it, weights that require grad are recorded in the graph too (same result,
        more memory) and the caller must put batch norms in eval mode.
    full : bool
        Also return the (D, D) matrix ``1/B sum_n J_n^T Lambda_n J_n``.
    batched_sites : bool, optional
        See :func:`per_sample_output`.

    Returns
    -------
    LeanGGN
        Diagonal per site and, with ``full``, the matrix in the order of ``sites``.
    """
    check_likelihood(likelihood)
    if not sites:
        raise ValueError("no sites given to lean_ggn")
    names = list(sites)
    ref = next(iter(sites.values()))
    size = sum(v.numel() for v in sites.values())
    diag = {k: torch.zeros_like(v).detach() for k, v in sites.items()}
    matrix = torch.zeros(size, size, dtype=ref.dtype, device=ref.device) if full else None
    with eval_mode(module), frozen_parameters(module):
        expanded, output = per_sample_output(forward, sites, x, batched_sites)
        batch = output.shape[0]
        if output.grad_fn is None:  # the output does not depend on the sites
            return LeanGGN(diag, matrix, batch)
        leaves = [expanded[k] for k in names]
        columns = list(hessian_factor_columns(output, likelihood, noise_std))
        for c, column in enumerate(columns):
            grads = torch.autograd.grad(
                output, leaves, column, retain_graph=c < len(columns) - 1, allow_unused=True
            )
            grads = [
                torch.zeros_like(v) if g is None else g
                for v, g in zip(leaves, grads, strict=True)
            ]
            for name, g in zip(names, grads, strict=True):
                diag[name] = diag[name] + g.square().sum(0)
            if matrix is not None:
                flat = torch.cat([g.reshape(batch, -1) for g in grads], dim=1)  # (batch, D)
                matrix = matrix + flat.T @ flat
    diag = {k: v / batch for k, v in diag.items()}
    if matrix is not None:
        matrix = matrix / batch
    return LeanGGN(diag, matrix, batch)


def ggn_lean_backend(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float,
    module: nn.Module | None,
    batched_sites: bool | None = None,
    **_: object,
) -> dict[str, Tensor]:
    """Curvature backend ``"ggn_lean"``: exact GGN diagonal of the mean NLL of one batch.

    The same quantity as the ``"ggn"`` backend, from one forward and one backward per column of
    the output-Hessian factor (see the module docstring); ``y`` is not used.
    ``batched_sites`` as for :func:`per_sample_output`.
    """
    return lean_ggn(
        forward, sites, x, likelihood, noise_std, module, batched_sites=batched_sites
    ).diagonal


if "ggn_lean" not in BACKENDS:
    register_backend("ggn_lean", ggn_lean_backend)
