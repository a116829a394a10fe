"""The shared maths test bed of the curvature, Laplace, evidence and type-II tests.

Three parts, float64 throughout:

* **Linear-Gaussian regression.** ``y = X w + eps``, ``eps ~ N(0, s^2 I)``,
  ``w ~ N(0, diag(gamma))``: designs (iid, orthogonal, correlated, diagonal), simulated data, and
  the closed forms of :class:`LinearGaussian` (exact posterior, log evidence, GGN, evidence
  maximiser) and of the ARD fixed point. The Pyro models :data:`LINEAR` (one site ``w``) and
  :data:`SPLIT_LINEAR` (the weights as two sites ``a``, ``b``) state the same problem for the
  inference code.
* **Brute-force curvature.** The GGN matrix ``1/B sum_n J_n^T Lambda_n J_n`` from full
  Jacobians (``torch.func.jacrev``) and the diagonal of the Hessian (``torch.func.hessian``).
* **Tiny switch networks.** Small nets whose forward takes named switch sites, built with
  seeded, non-trivial batch-norm statistics: :func:`tiny_switch_case`, :func:`gated_mlp_case`,
  :func:`gated_conv_case`, :func:`supernet_case`.

Pytest puts ``tests/`` on ``sys.path`` (there is no ``tests/__init__.py``), so a test file imports
this module as ``mathbed``. Every draw comes from a seeded ``torch.Generator`` or from a global
seed set by the builder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import hessian, jacrev

from pyronas.inference.curvature import per_sample_nll

DT = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
"""Tolerance of an identity that holds to rounding in float64."""

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]
"""``forward(sites, x) -> output``: a network as a function of its switch sites."""


def rng(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (the same stream as ``torch.manual_seed(seed)``)."""
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------
# site dictionaries


def flatten_sites(sites: Mapping[str, Tensor]) -> Tensor:
    """Concatenate the sites, each flattened, in dictionary order.

    Returns
    -------
    Tensor
        (P,) with ``P`` the total number of elements.
    """
    return torch.cat([v.reshape(-1) for v in sites.values()])


def unflatten_sites(vec: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`flatten_sites`: split ``vec`` (P,) into the shapes of ``like``."""
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def assert_sites_close(a: Mapping[str, Tensor], b: Mapping[str, Tensor], **tol: float) -> None:
    """Same keys, same shapes, values close (``torch.testing.assert_close`` with ``tol``)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], msg=k, **tol)


# ------------------------------------------------------------------------------------------
# linear-Gaussian regression: designs and data


def iid_design(n: int, d: int, generator: torch.Generator) -> Tensor:
    """(n, d) standard normal entries."""
    return torch.randn(n, d, generator=generator, dtype=DT)


def orthogonal_design(n: int, norms: Tensor | list[float], generator: torch.Generator) -> Tensor:
    """(n, d) orthogonal columns with the given norms, so ``X^T X = diag(norms^2)``."""
    norms = torch.as_tensor(norms, dtype=DT)
    q, _ = torch.linalg.qr(iid_design(n, len(norms), generator))
    return q * norms


def correlated_design(n: int, d: int, rho: float, generator: torch.Generator) -> Tensor:
    """(n, d) normal rows with unit variances and pairwise correlation ``rho``."""
    corr = (1 - rho) * torch.eye(d, dtype=DT) + rho * torch.ones(d, d, dtype=DT)
    return iid_design(n, d, generator) @ torch.linalg.cholesky(corr).T


def diagonal_design(n: int, d: int, generator: torch.Generator) -> Tensor:
    """(n, d) with one non-zero column per row (row ``i`` in column ``i % d``): ``X^T X`` is
    diagonal. ``n`` must be a multiple of ``d``."""
    x = torch.zeros(n, d, dtype=DT)
    for c in range(d):
        x[c::d, c] = torch.randn(n // d, generator=generator, dtype=DT)
    return x


def simulate(
    x: Tensor,
    w_true: Tensor | list[float],
    noise_std: float,
    generator: torch.Generator,
    intercept: float = 0.0,
) -> Tensor:
    """Targets ``y = X w_true + intercept + noise_std * eps``, ``eps ~ N(0, I)``: (n,)."""
    w_true = torch.as_tensor(w_true, dtype=DT)
    return x @ w_true + intercept + noise_std * torch.randn(len(x), generator=generator, dtype=DT)


@dataclass(frozen=True)
class GaussianPosterior:
    """The exact posterior ``N(mean, covariance)`` of the weights.

    Attributes
    ----------
    mean : Tensor
        (D,)
    covariance : Tensor
        (D, D)
    precision : Tensor
        (D, D), the inverse of ``covariance``.
    """

    mean: Tensor
    covariance: Tensor
    precision: Tensor


@dataclass(frozen=True)
class LinearGaussian:
    """Bayesian linear regression ``y = X w + eps``, ``eps ~ N(0, s^2 I)``,
    ``w ~ N(0, diag(gamma))``, with its closed forms.

    Attributes
    ----------
    x : Tensor
        (N, D) design.
    y : Tensor
        (N,) targets.
    noise_std : float
        ``s``, the noise standard deviation of the model.
    """

    x: Tensor
    y: Tensor
    noise_std: float

    @property
    def num_data(self) -> int:
        """``N``."""
        return len(self.y)

    def data_precision(self) -> Tensor:
        """``X^T X / s^2``: (D, D), the Hessian of the summed negative log likelihood."""
        return self.x.T @ self.x / self.noise_std**2

    def ggn(self) -> Tensor:
        """``X^T X / (N s^2)``: (D, D), the GGN (= Hessian) of the mean negative log
        likelihood."""
        return self.data_precision() / self.num_data

    def posterior(self, gamma: Tensor) -> GaussianPosterior:
        """Exact posterior for prior variances ``gamma`` (D,): precision
        ``X^T X / s^2 + diag(1 / gamma)``, mean ``S X^T y / s^2``."""
        prec = self.data_precision() + torch.diag(1 / gamma)
        cov = torch.linalg.inv(prec)
        mean = cov @ self.x.T @ self.y / self.noise_std**2
        return GaussianPosterior(mean, cov, prec)

    def log_evidence(self, gamma: Tensor) -> Tensor:
        """``log N(y | 0, s^2 I + X diag(gamma) X^T)``: () and differentiable in ``gamma``."""
        marg = self.noise_std**2 * torch.eye(self.num_data, dtype=DT)
        marg = marg + self.x @ torch.diag(gamma) @ self.x.T
        zero = torch.zeros_like(self.y)
        return torch.distributions.MultivariateNormal(zero, marg).log_prob(self.y)

    def evidence_maximiser(self) -> Tensor:
        """The prior variances that maximise the evidence, for an orthogonal design: (D,).

        The evidence factorises over the columns, and ``gamma_i* = b_i^2 - s^2 / d_i`` with
        ``d = diag(X^T X)``, ``b = X^T y / d`` (negative where the data favour pruning).
        """
        xtx = self.x.T @ self.x
        d = torch.diagonal(xtx)
        assert torch.allclose(xtx, torch.diag(d), atol=1e-8 * d.max().item()), "not orthogonal"
        b = self.x.T @ self.y / d
        return b**2 - self.noise_std**2 / d


def ard_alpha(gamma: Tensor, ht: Tensor) -> Tensor:
    """``alpha = Ht / (1 + gamma Ht)``: the data-weighted precision of the group ARD update,
    elementwise (equal to ``1 / gamma - Sigma / gamma^2`` with ``Sigma = 1 / (1 / gamma + Ht)``).
    """
    return ht / (1 + gamma * ht)


def ard_fixed_point(s: Tensor, ht: Tensor) -> Tensor:
    """The single-element ARD fixed point ``gamma = |s| / sqrt(alpha(gamma))`` at a fixed mean
    ``s`` and data precision ``Ht``: the positive root of ``Ht gamma^2 - s^2 Ht gamma - s^2``.
    Elementwise, any shape."""
    return (s**2 * ht + torch.sqrt(s**4 * ht**2 + 4 * ht * s**2)) / (2 * ht)


# ------------------------------------------------------------------------------------------
# linear-Gaussian regression as Pyro models


class LinearNet(nn.Module):
    """``x @ w`` (+ a learnable scalar bias, the "network weight", when ``bias``)."""

    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros((), dtype=DT)) if bias else None

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """(N, D) and (D,) -> (N,)."""
        out = x @ w
        return out if self.bias is None else out + self.bias


def linear_forward(sites: dict[str, Tensor], x: Tensor) -> Tensor:
    """``x @ sites["w"]``: the :data:`LINEAR` net as a function of its site."""
    return x @ sites["w"]


def linear_model(net: Any, x: Tensor, y: Tensor, hypers: dict[str, Any], num_data: int) -> None:
    """``w ~ N(0, diag(gamma))`` over a feature plate, ``y ~ N(net(x, w), noise_std)``."""
    gamma = hypers["gamma"]["w"]
    with pyro.plate("feature", gamma.shape[0]):
        w = pyro.sample("w", dist.Normal(torch.zeros_like(gamma), gamma.sqrt()))
    with pyro.plate("data", num_data, subsample_size=len(x)):
        pyro.sample("obs", dist.Normal(net(x, w), hypers["noise_std"]), obs=y)


LINEAR = SimpleNamespace(SITES=("w",), model=linear_model)
"""The linear-Gaussian problem as a prior module (one site ``w``)."""


def split_net(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``x @ w`` with ``w = (a, b)``: ``a`` (2,), ``b`` (1, 2), ``x`` (N, 4)."""
    return x[:, :2] @ a + x[:, 2:] @ b.reshape(-1)


def split_forward(sites: dict[str, Tensor], x: Tensor) -> Tensor:
    """:func:`split_net` as a function of the sites ``a``, ``b``."""
    return split_net(x, sites["a"], sites["b"])


def split_sites(flat: Tensor) -> dict[str, Tensor]:
    """(4,) weights -> ``{"a": (2,), "b": (1, 2)}`` (copies)."""
    return {"a": flat[:2].clone(), "b": flat[2:].reshape(1, 2).clone()}


def split_model(net: Any, x: Tensor, y: Tensor, hypers: dict[str, Any], num_data: int) -> None:
    """:func:`linear_model` with the weights as two sites: ``a`` in a plate, ``b`` an event."""
    ga, gb = hypers["gamma"]["a"], hypers["gamma"]["b"]
    with pyro.plate("fa", 2):
        a = pyro.sample("a", dist.Normal(torch.zeros_like(ga), ga.sqrt()))
    b = pyro.sample("b", dist.Normal(torch.zeros_like(gb), gb.sqrt()).to_event(2))
    with pyro.plate("data", num_data, subsample_size=len(x)):
        pyro.sample("obs", dist.Normal(net(x, a, b), hypers["noise_std"]), obs=y)


SPLIT_LINEAR = SimpleNamespace(SITES=("a", "b"), model=split_model)
"""The linear-Gaussian problem with two sites, to exercise the flattening of several sites."""


# ------------------------------------------------------------------------------------------
# brute-force curvature


def output_hessian(output: Tensor, likelihood: str, noise_std: float = 1.0) -> Tensor:
    """Hessian of one sample's negative log likelihood in its (flattened) output.

    Parameters
    ----------
    output : Tensor
        (K,) logits or means of one sample.
    likelihood : {"categorical", "gaussian"}
    noise_std : float

    Returns
    -------
    Tensor
        (K, K): ``diag(p) - p p^T`` with ``p = softmax(output)``, or ``I / noise_std^2``.
    """
    if likelihood == "categorical":
        p = torch.softmax(output, -1)
        return torch.diag(p) - torch.outer(p, p)
    return torch.eye(output.numel(), dtype=output.dtype) / noise_std**2


def brute_ggn_matrix(
    forward: Forward,
    sites: dict[str, Tensor],
    x: Tensor,
    likelihood: str = "gaussian",
    noise_std: float = 1.0,
) -> Tensor:
    """``1/B sum_n J_n^T Lambda_n J_n`` from the Jacobian of the whole batch's output.

    Parameters
    ----------
    forward, sites
        The network and its sites (any shapes; flattened in dictionary order).
    x : Tensor
        (B, ...) inputs.
    likelihood, noise_std
        As in :func:`output_hessian`.

    Returns
    -------
    Tensor
        (P, P) GGN matrix of the mean negative log likelihood.
    """
    theta = flatten_sites(sites)
    out = forward(sites, x).detach()
    jac = jacrev(lambda t: forward(unflatten_sites(t, sites), x))(theta)
    jac = jac.reshape(out.shape[0], -1, theta.numel())  # (B, K, P)
    total = torch.zeros(theta.numel(), theta.numel(), dtype=theta.dtype)
    for n in range(out.shape[0]):
        total += jac[n].T @ output_hessian(out[n].reshape(-1), likelihood, noise_std) @ jac[n]
    return total / out.shape[0]


def brute_ggn(
    forward: Forward,
    sites: dict[str, Tensor],
    x: Tensor,
    likelihood: str = "gaussian",
    noise_std: float = 1.0,
) -> dict[str, Tensor]:
    """Diagonal of :func:`brute_ggn_matrix`, per site (each of its site's shape)."""
    matrix = brute_ggn_matrix(forward, sites, x, likelihood, noise_std)
    return unflatten_sites(torch.diagonal(matrix), sites)


def brute_hessian(
    forward: Forward,
    sites: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float = 1.0,
) -> dict[str, Tensor]:
    """Diagonal of the exact Hessian of the mean negative log likelihood in the sites
    (``torch.func.hessian`` of the flattened sites), per site."""
    theta = flatten_sites(sites)

    def loss(t: Tensor) -> Tensor:
        out = forward(unflatten_sites(t, sites), x)
        return per_sample_nll(out, y, likelihood, noise_std).mean()

    return unflatten_sites(torch.diagonal(hessian(loss)(theta)), sites)


# ------------------------------------------------------------------------------------------
# tiny switch networks


class SwitchCase(NamedTuple):
    """A network in eval mode with its switch sites and a batch.

    Attributes
    ----------
    net : nn.Module
    forward : Forward
        ``forward(sites, x)``.
    sites : dict[str, Tensor]
        The switch values at which curvature is taken.
    x : Tensor
        (B, ...) inputs.
    y : Tensor
        (B,) labels.
    """

    net: nn.Module
    forward: Forward
    sites: dict[str, Tensor]
    x: Tensor
    y: Tensor


class TinySwitchNet(nn.Module):
    """Stem conv + BatchNorm, then two switched edges into a node with four switched ops:
    separable conv (depthwise + pointwise), dilated conv, max pool, avg pool. Branches
    (sep + dil) and (max + avg) are summed, the two sums concatenated, then a classifier.

    ``forward(x, edge, op)``: ``x`` (B, c_in, H, W), ``edge`` (2,), ``op`` (4,) ->
    (B, classes)."""

    def __init__(self, c_in: int = 2, c: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c_in, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.dil = nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False)
        self.pool_bn = nn.BatchNorm2d(c, affine=False)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x: Tensor, edge: Tensor, op: Tensor) -> Tensor:
        h = self.bn(self.stem(x))
        a = torch.relu(edge[0] * h)
        b = torch.tanh(edge[1] * h)
        sep = self.pw(self.dw(a))
        dil = self.dil(b)
        mx = self.pool_bn(F.max_pool2d(a, 3, stride=1, padding=1))
        av = F.avg_pool2d(b, 3, stride=1, padding=1)
        branch1 = op[0] * sep + op[1] * dil
        branch2 = op[2] * mx + op[3] * av
        z = torch.cat([branch1, branch2], 1)
        return self.head(torch.tanh(z).mean((2, 3)))


class GatedMLP(nn.Module):
    """Linear -> BatchNorm1d -> tanh, gated per feature by ``gate`` (hidden,), then a scalar
    ``scale`` and a linear head: (B, d_in) -> (B, out)."""

    def __init__(self, d_in: int = 3, hidden: int = 4, out: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, out)

    def forward(self, x: Tensor, gate: Tensor, scale: Tensor) -> Tensor:
        return self.head(scale * torch.tanh(gate * self.bn(self.lin(x))))


class GatedConv(nn.Module):
    """Conv + BatchNorm2d stem, two branches (conv, avg pool) gated by ``edge`` (2,) and mixed by
    ``op`` (2, 2), global mean pool and a linear head: (B, 1, H, W) -> (B, classes)."""

    def __init__(self, c: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor, edge: Tensor, op: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        a = self.conv(edge[0] * h)
        b = F.avg_pool2d(edge[1] * h, 3, stride=1, padding=1)
        z = op[0, 0] * a + op[0, 1] * b + op[1, 0] * torch.tanh(a) * op[1, 1]
        return self.head(z.mean((2, 3)))


def randomise_batch_norms(net: nn.Module) -> None:
    """Non-trivial running statistics (and affine parameters) for every batch norm of ``net``,
    from the global RNG."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)


def tiny_switch_case(seed: int = 1) -> SwitchCase:
    """:class:`TinySwitchNet` with sites ``edge`` (2,), ``op`` (4,) and a batch of 5 (2, 6, 6)
    images with labels in 0..3."""
    torch.manual_seed(seed)
    net = TinySwitchNet().to(DT)
    randomise_batch_norms(net)
    net.eval()
    sites = {
        "edge": torch.tensor([0.9, 1.2], dtype=DT),
        "op": torch.tensor([1.1, 0.7, -0.8, 1.3], dtype=DT),
    }
    x = torch.randn(5, 2, 6, 6, dtype=DT)
    y = torch.tensor([0, 1, 2, 3, 1])

    def forward(s: dict[str, Tensor], xb: Tensor) -> Tensor:
        return net(xb, s["edge"], s["op"])

    return SwitchCase(net, forward, sites, x, y)


def gated_mlp_case(seed: int = 2, batch: int = 7) -> SwitchCase:
    """:class:`GatedMLP` with sites ``gate`` (4,), ``scale`` () and ``batch`` inputs (3,) with
    labels in 0..2."""
    torch.manual_seed(seed)
    net = GatedMLP().to(DT)
    randomise_batch_norms(net)
    net.eval()
    sites = {
        "gate": torch.tensor([0.8, -1.1, 1.3, 0.5], dtype=DT),
        "scale": torch.tensor(1.2, dtype=DT),
    }
    x = torch.randn(batch, 3, dtype=DT)
    y = torch.randint(0, 3, (batch,))

    def forward(s: dict[str, Tensor], xb: Tensor) -> Tensor:
        return net(xb, s["gate"], s["scale"])

    return SwitchCase(net, forward, sites, x, y)


def gated_conv_case(seed: int = 3) -> SwitchCase:
    """:class:`GatedConv` with sites ``edge`` (2,), ``op`` (2, 2) and a batch of 5 (1, 5, 5)
    images with labels in 0..2."""
    torch.manual_seed(seed)
    net = GatedConv().to(DT)
    randomise_batch_norms(net)
    net.eval()
    sites = {
        "edge": torch.tensor([0.9, 1.2], dtype=DT),
        "op": torch.tensor([[1.1, 0.7], [-0.8, 1.3]], dtype=DT),
    }
    x = torch.randn(5, 1, 5, 5, dtype=DT)
    y = torch.randint(0, 3, (5,))

    def forward(s: dict[str, Tensor], xb: Tensor) -> Tensor:
        return net(xb, s["edge"], s["op"])

    return SwitchCase(net, forward, sites, x, y)


def supernet_case(
    seed: int, channels: int, layers: int, classes: int, image: int, batch: int
) -> SwitchCase:
    """A ``bayesnas8`` search supernet in eval mode after one training-mode pass over 16 random
    images (non-trivial running statistics), with random switch values
    ``edge_switch * U(0.5, 1.5)`` and ``op_switch * U(0, 1)``, and ``batch`` (1, image, image)
    inputs with labels in ``0..classes - 1``."""
    from pyronas.space import get_space
    from pyronas.supernet import SuperNet

    torch.manual_seed(seed)
    net = SuperNet(get_space("bayesnas8"), C=channels, layers=layers, num_classes=classes,
                   in_channels=1).to(DT)
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 1, image, image, dtype=DT), *net.init_switches())
    net.eval()
    e, o = net.init_switches()
    sites = {"edge_switch": e * (0.5 + torch.rand_like(e)), "op_switch": o * torch.rand_like(o)}
    x = torch.randn(batch, 1, image, image, dtype=DT)
    y = torch.randint(0, classes, (batch,))

    def forward(s: dict[str, Tensor], xb: Tensor) -> Tensor:
        return net(xb, s["edge_switch"], s["op_switch"])

    return SwitchCase(net, forward, sites, x, y)
