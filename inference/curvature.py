"""Diagonal curvature of a data loss with respect to a few named variables ("sites").

The network weights are closed over by a forward function and held fixed; only the sites (for
example a few hundred scalar switches) are differentiated. Every backend returns the diagonal of a
curvature matrix of the MEAN per-sample negative log likelihood of a batch,

    L(s) = 1/B * sum_n nll(y_n, f(x_n; s)),

and :func:`diagonal_curvature` averages it over several batches. Multiplying by the number of
training points N gives the data precision of the full-data likelihood (see
:mod:`pyronas.inference.diagonal_laplace`).

Backends (chosen by name, see :data:`BACKENDS`; more can be added with :func:`register_backend`):

``"ggn"``
    Exact diagonal of the generalised Gauss-Newton matrix 1/B sum_n J_n^T Lambda_n J_n, where J_n
    is the Jacobian of sample n's output with respect to the sites and Lambda_n the Hessian of the
    negative log likelihood with respect to the output. Lambda_n is written through a symmetric
    factor: for the softmax, Lambda = diag(p) - p p^T = sum_c q_c q_c^T with
    q_c = sqrt(p_c) (e_c - p); for a Gaussian, Lambda = I / sigma^2. The per-sample Jacobians come
    from ``torch.func`` (``vmap`` over samples of ``jacrev``), chunked to bound memory.
``"fisher"``
    Monte Carlo Fisher: labels sampled from the model's own predictive distribution, per-sample
    gradients (one vectorised backward), squared and averaged. Its expectation is the GGN for the
    categorical and Gaussian likelihoods.
``"exact"``
    The true Hessian diagonal of L by double back-propagation, one element at a time. For small
    problems and tests only.

Samples must be independent for the per-sample backends, so the network is evaluated in eval mode
(BatchNorm uses its running statistics). Pass the network as ``module`` to have it switched to eval
mode for the computation and restored afterwards; otherwise the caller is responsible. The
``torch.func`` backends (``ggn``, ``fisher``) run under ``torch.no_grad``, so the network weights,
which they do not differentiate, record no graph. With ``affine_batch_norm=True`` they also run
the eval-mode batch norms of ``module`` as the per-channel affine maps they are
(:func:`affine_batch_norms`): the same function, about 20% cheaper under ``vmap`` on the digits
search network, but rounded differently (float32: relative differences about 1e-7 in the
curvature), which is enough to change the path of a long search; hence off by default.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev, vjp, vmap

logger = logging.getLogger(__name__)

ForwardFn = Callable[[dict[str, Tensor], Tensor], Tensor]
"""(sites, x) -> output: logits (batch, class) or a Gaussian mean (batch[, ...])."""

BackendFn = Callable[..., dict[str, Tensor]]
"""fn(forward, sites, x, y, likelihood, noise_std, module, **options) -> {site: curvature}."""

LIKELIHOODS = ("categorical", "gaussian")


# --------------------------------------------------------------------------------------------
# helpers


@contextmanager
def eval_mode(module: nn.Module | None) -> Iterator[None]:
    """Put ``module`` (and all its submodules) in eval mode, restoring every flag afterwards."""
    if module is None:
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _affine_forward(norm: nn.modules.batchnorm._BatchNorm) -> Callable[[Tensor], Tensor]:
    """Eval-mode forward of a batch norm as ``x * scale + shift`` per channel."""

    def forward(x: Tensor) -> Tensor:
        scale = torch.rsqrt(norm.running_var + norm.eps)
        shift = -norm.running_mean * scale
        if norm.weight is not None:
            scale = scale * norm.weight
            shift = shift * norm.weight + norm.bias
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.reshape(shape) + shift.reshape(shape)

    return forward


@contextmanager
def affine_batch_norms(module: nn.Module | None) -> Iterator[None]:
    """Run the eval-mode batch norms of ``module`` as explicit per-channel affine maps.

    ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` written with elementwise
    ops: the same function up to rounding (float32: relative differences about 1e-7), but
    ``torch.func.vmap`` batches it far more cheaply than ``batch_norm``. Batch norms in
    training mode or without running statistics are left alone; the modules are restored on
    exit.
    """
    if module is None:
        yield
        return
    patched = [
        m for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and not m.training
        and m.running_mean is not None
        and "forward" not in m.__dict__
    ]
    for m in patched:
        m.forward = _affine_forward(m)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for m in patched:
            del m.forward


def check_likelihood(likelihood: str) -> None:
    """Raise a ``ValueError`` unless ``likelihood`` is one of :data:`LIKELIHOODS`."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")


def per_sample_nll(output: Tensor, y: Tensor, likelihood: str, noise_std: float = 1.0) -> Tensor:
    """Negative log likelihood of every sample.

    Parameters
    ----------
    output : Tensor
        (batch, class) logits for ``"categorical"``; (batch, ...) means for ``"gaussian"``.
    y : Tensor
        (batch,) integer labels, or (batch, ...) targets of the output's shape.
    likelihood : {"categorical", "gaussian"}
    noise_std : float
        Standard deviation of the Gaussian likelihood.

    Returns
    -------
    Tensor
        (batch,) negative log likelihoods (summed over the output dims of one sample).
    """
    check_likelihood(likelihood)
    if likelihood == "categorical":
        return F.cross_entropy(output, y, reduction="none")
    resid = (output - y.to(output.dtype)) / noise_std
    nll = 0.5 * resid**2 + math.log(noise_std) + 0.5 * math.log(2 * math.pi)
    return nll.reshape(nll.shape[0], -1).sum(1)


def hessian_diagonal(
    scalar: Tensor, tensors: Mapping[str, Tensor], create_graph: bool = False
) -> dict[str, Tensor]:
    """Diagonal of the Hessian of ``scalar`` w.r.t. each tensor, by double back-propagation.

    Loops over elements (one backward each): meant for a few hundred elements at most.
    ``tensors`` must require grad and be part of ``scalar``'s graph.
    """
    names = list(tensors)
    grads = torch.autograd.grad(
        scalar, [tensors[k] for k in names], create_graph=True, allow_unused=True
    )
    out: dict[str, Tensor] = {}
    for name, g in zip(names, grads, strict=True):
        t = tensors[name]
        if g is None or not g.requires_grad:  # scalar is at most linear in t
            out[name] = torch.zeros_like(t)
            continue
        g_flat = g.reshape(-1)
        diag = []
        for i in range(g_flat.numel()):
            (row,) = torch.autograd.grad(
                g_flat[i], t, retain_graph=True, create_graph=create_graph, allow_unused=True
            )
            diag.append(torch.zeros((), dtype=t.dtype) if row is None else row.reshape(-1)[i])
        out[name] = torch.stack(diag).reshape(t.shape)
    return out


def _detached(sites: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in sites.items()}


def _single(forward: ForwardFn) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
    """Forward for one sample (no batch dim), suitable for ``torch.func.vmap``."""

    def f(sites: dict[str, Tensor], xi: Tensor) -> Tensor:
        return forward(sites, xi.unsqueeze(0)).squeeze(0)

    return f


# --------------------------------------------------------------------------------------------
# backends (one batch each)


def ggn_backend(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float,
    module: nn.Module | None,
    chunk_size: int | None = 32,
    affine_batch_norm: bool = False,
    **_: object,
) -> dict[str, Tensor]:
    """Exact diagonal GGN of the mean NLL of one batch (see the module docstring).

    ``chunk_size`` samples are processed together by ``vmap``: lower it to save memory.
    ``affine_batch_norm``: run the eval-mode batch norms as explicit affine maps (faster,
    rounded differently; see the module docstring).
    """
    primals = _detached(sites)
    f = _single(forward)

    def f_aux(s: dict[str, Tensor], xi: Tensor) -> tuple[Tensor, Tensor]:
        out = f(s, xi)
        return out, out.detach()

    jac_fn = vmap(jacrev(f_aux, has_aux=True), in_dims=(None, 0), chunk_size=chunk_size)
    # torch.func differentiates w.r.t. the sites inside no_grad; the weights record no graph
    norms = affine_batch_norms(module if affine_batch_norm else None)
    with eval_mode(module), norms, torch.no_grad():
        jac, output = jac_fn(primals, x)  # jac[site]: (batch, *out, *site); output: (batch, *out)
    batch = output.shape[0]
    out_numel = output[0].numel()
    result = {}
    for name, site in primals.items():
        j = jac[name].reshape(batch, out_numel, site.numel())
        if likelihood == "categorical":
            # sum_c (q_c^T J)^2 with q_c = sqrt(p_c)(e_c - p): sum_c p_c (J_c - p^T J)^2
            p = torch.softmax(output, -1).unsqueeze(-1)  # (batch, class, 1)
            centred = j - (p * j).sum(1, keepdim=True)
            per_sample = (p * centred**2).sum(1)
        else:
            per_sample = (j**2).sum(1) / noise_std**2
        result[name] = per_sample.mean(0).reshape(site.shape)
    return result


def fisher_backend(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float,
    module: nn.Module | None,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    chunk_size: int | None = 32,
    affine_batch_norm: bool = False,
    **_: object,
) -> dict[str, Tensor]:
    """Monte Carlo Fisher diagonal of the mean NLL of one batch.

    For every data point ``num_samples`` labels are drawn from the model's predictive
    distribution (with ``generator``, or the global RNG); the true labels ``y`` are not used.
    The squared per-sample gradients are averaged over labels and data points.
    ``affine_batch_norm`` as for :func:`ggn_backend`.
    """
    primals = _detached(sites)
    f = _single(forward)
    norms = affine_batch_norms(module if affine_batch_norm else None)
    with eval_mode(module), norms, torch.no_grad():
        output = forward(primals, x)
        if likelihood == "categorical":
            probs = torch.softmax(output, -1)
            labels = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
            # residual p - e_y for every sampled label: (batch, samples, class)
            onehot = F.one_hot(labels, output.shape[-1]).to(output.dtype)
            resid = probs.unsqueeze(1) - onehot
        else:
            shape = (output.shape[0], num_samples, *output.shape[1:])
            noise = torch.randn(shape, generator=generator, dtype=output.dtype)
            resid = -noise.to(output.device) / noise_std  # (f - y) / sigma^2, y = f + sigma*eps

        def sq_grads(xi: Tensor, ri: Tensor) -> dict[str, Tensor]:
            _, vjp_fn = vjp(lambda s: f(s, xi), primals)
            (g,) = vmap(vjp_fn)(ri)  # g[site]: (samples, *site)
            return {k: (v**2).mean(0) for k, v in g.items()}

        sq = vmap(sq_grads, chunk_size=chunk_size)(x, resid)
    return {k: v.mean(0) for k, v in sq.items()}


def exact_backend(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float,
    module: nn.Module | None,
    **_: object,
) -> dict[str, Tensor]:
    """True Hessian diagonal of the mean NLL of one batch (double backward, small problems)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in sites.items()}
    with eval_mode(module), torch.enable_grad():
        loss = per_sample_nll(forward(leaves, x), y, likelihood, noise_std).mean()
        diag = hessian_diagonal(loss, leaves)
    return {k: v.detach() for k, v in diag.items()}


BACKENDS: dict[str, BackendFn] = {
    "ggn": ggn_backend,
    "fisher": fisher_backend,
    "exact": exact_backend,
}


def register_backend(name: str, fn: BackendFn, overwrite: bool = False) -> None:
    """Make ``fn`` available as ``diagonal_curvature(..., backend=name)``.

    ``fn(forward, sites, x, y, likelihood, noise_std, module, **options)`` must return the
    diagonal curvature of the mean NLL of the batch (x, y), one tensor per site, site-shaped.
    """
    if name in BACKENDS and not overwrite:
        raise ValueError(f"curvature backend {name!r} already registered (pass overwrite=True)")
    BACKENDS[name] = fn


# --------------------------------------------------------------------------------------------
# public entry point


def diagonal_curvature(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    batches: Iterable[tuple[Tensor, Tensor]],
    likelihood: str = "categorical",
    backend: str = "ggn",
    noise_std: float = 1.0,
    module: nn.Module | None = None,
    *,
    reduction: str = "mean",
    max_batches: int | None = None,
    **options: object,
) -> dict[str, Tensor]:
    """Diagonal curvature of the mean per-sample NLL w.r.t. the sites, averaged over batches.

    Parameters
    ----------
    forward : ForwardFn
        ``forward(sites, x) -> output``; network weights closed over and held fixed.
    sites : Mapping[str, Tensor]
        The variables to differentiate, e.g. ``{"op_switch": (cell_type, edge, op)}``.
    batches : Iterable[tuple[Tensor, Tensor]]
        (x, y) batches, e.g. a DataLoader over held-out data. Each batch counts equally.
    likelihood : {"categorical", "gaussian"}
        Categorical over logits (batch, class) or Gaussian with std ``noise_std``.
    backend : str
        A key of :data:`BACKENDS`: ``"ggn"`` (default), ``"fisher"``, ``"exact"``, or registered.
    noise_std : float
        Gaussian likelihood standard deviation (ignored for categorical).
    module : nn.Module, optional
        The network; it is put in eval mode during the computation and restored afterwards.
        Without it the caller must make sure samples are independent (eval-mode BatchNorm).
    reduction : {"mean", "sum"}
        ``"mean"`` (default): curvature of the batch-mean loss. ``"sum"``: of the batch-summed
        loss, i.e. each batch's value multiplied by its batch size (the convention of the
        original BayesNAS code).
    max_batches : int, optional
        Use only the first ``max_batches`` batches.
    **options
        Passed to the backend, e.g. ``chunk_size`` and ``affine_batch_norm`` (ggn, fisher),
        ``generator`` and ``num_samples`` (fisher).

    Returns
    -------
    dict[str, Tensor]
        One tensor per site, of the site's shape, non-negative for ``ggn`` and ``fisher``.
    """
    check_likelihood(likelihood)
    if backend not in BACKENDS:
        raise ValueError(f"unknown curvature backend {backend!r}; known: {sorted(BACKENDS)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not sites:
        raise ValueError("no sites given to diagonal_curvature")
    fn = BACKENDS[backend]
    device = next(iter(sites.values())).device
    total = {k: torch.zeros_like(v, dtype=v.dtype).detach() for k, v in sites.items()}
    count = 0
    for x, y in batches:
        if max_batches is not None and count >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        curv = fn(forward, sites, x, y, likelihood, noise_std, module, **options)
        scale = float(x.shape[0]) if reduction == "sum" else 1.0
        for k in total:
            total[k] = total[k] + scale * curv[k].detach()
        count += 1
    if count == 0:
        raise ValueError("diagonal_curvature got no batches")
    logger.debug("curvature (%s) averaged over %d batches", backend, count)
    return {k: v / count for k, v in total.items()}


__all__ = [
    "BACKENDS",
    "ForwardFn",
    "check_likelihood",
    "diagonal_curvature",
    "eval_mode",
    "exact_backend",
    "affine_batch_norms",
    "fisher_backend",
    "ggn_backend",
    "hessian_diagonal",
    "per_sample_nll",
    "register_backend",
]
