"""Diagonal Laplace posterior and evidence against the closed forms of Bayesian linear regression.

Model: y = X w + eps, eps ~ N(0, s^2 I), w ~ N(0, Gamma), Gamma = diag(gamma). Posterior
N(m, S) with S = (X^T X / s^2 + Gamma^-1)^-1, m = S X^T y / s^2; evidence
log N(y | 0, s^2 I + X Gamma X^T). The DIAGONAL Laplace approximation is exact only when the
posterior precision is diagonal, i.e. X^T X is diagonal: the equality tests use an orthogonal
design (columns of X orthogonal, with different norms).
"""

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyronas.inference.curvature import diagonal_curvature
from pyronas.inference.diagonal_laplace import DiagonalLaplace, fit_diagonal_laplace
from pyronas.inference.evidence import joint_terms, laplace_log_evidence, log_evidence

DTYPE = torch.float64
NOISE = 0.3


def _model(net, x, y, hypers, num_data):
    gamma = hypers["gamma"]["w"]
    with pyro.plate("feature", gamma.shape[0]):
        w = pyro.sample("w", dist.Normal(torch.zeros_like(gamma), gamma.sqrt()))
    with pyro.plate("data", num_data, subsample_size=len(x)):
        pyro.sample("obs", dist.Normal(net(x, w), hypers["noise_std"]), obs=y)


LINEAR = SimpleNamespace(SITES=("w",), model=_model)


def _net(x, w):
    return x @ w


def _data(orthogonal: bool, n: int = 12):
    torch.manual_seed(0)
    a = torch.randn(n, 3, dtype=DTYPE)
    if orthogonal:
        q, _ = torch.linalg.qr(a)
        x = q * torch.tensor([3.0, 1.5, 0.7], dtype=DTYPE)
    else:
        x = a
    w_true = torch.tensor([1.0, -0.5, 0.2], dtype=DTYPE)
    y = x @ w_true + NOISE * torch.randn(n, dtype=DTYPE)
    return x, y


def _analytic(x, y, gamma):
    prec = x.T @ x / NOISE**2 + torch.diag(1 / gamma)
    cov = torch.linalg.inv(prec)
    mean = cov @ x.T @ y / NOISE**2
    marg = NOISE**2 * torch.eye(len(y), dtype=DTYPE) + x @ torch.diag(gamma) @ x.T
    log_ml = torch.distributions.MultivariateNormal(torch.zeros_like(y), marg).log_prob(y)
    return mean, cov, prec, log_ml


def _laplace(x, y, gamma, batches=None):
    mean, *_ = _analytic(x, y, gamma)
    sites = {"w": mean}
    batches = batches or [(x, y)]
    curv = diagonal_curvature(
        lambda s, xb: _net(xb, s["w"]), sites, batches, likelihood="gaussian", noise_std=NOISE
    )
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    terms = joint_terms(LINEAR, _net, batches, sites, hypers, len(y))
    post = fit_diagonal_laplace(sites, curv, len(y), terms.prior_precision)
    return post, curv, hypers, sites


def test_orthogonal_design_laplace_posterior_is_analytic_posterior():
    x, y = _data(orthogonal=True)
    gamma = torch.tensor([0.5, 2.0, 1.0], dtype=DTYPE)
    mean, cov, _, _ = _analytic(x, y, gamma)
    post, curv, _, _ = _laplace(x, y, gamma)
    torch.testing.assert_close(post.prior_var["w"], gamma)  # prior precision by autograd
    torch.testing.assert_close(post.mean["w"], mean)
    torch.testing.assert_close(post.var["w"], torch.diagonal(cov))
    torch.testing.assert_close(curv["w"], (x**2).mean(0) / NOISE**2)


def test_orthogonal_design_evidence_is_analytic_and_differentiable():
    x, y = _data(orthogonal=True)
    gamma0 = torch.tensor([0.5, 2.0, 1.0], dtype=DTYPE)
    _, curv, _, sites = _laplace(x, y, gamma0)
    gamma = gamma0.clone().requires_grad_(True)
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    ev = laplace_log_evidence(LINEAR, _net, (x, y), sites, hypers, curv, len(y))
    (grad,) = torch.autograd.grad(ev, gamma)

    gamma_ref = gamma0.clone().requires_grad_(True)
    *_, log_ml = _analytic(x, y, gamma_ref)
    (grad_ref,) = torch.autograd.grad(log_ml, gamma_ref)
    torch.testing.assert_close(ev.detach(), log_ml.detach())
    # the MAP is a stationary point of the log joint, so the gradient at fixed sites is the
    # total derivative of the evidence
    torch.testing.assert_close(grad, grad_ref)


def test_evidence_from_two_half_batches_equals_full_batch():
    x, y = _data(orthogonal=True)
    gamma = torch.tensor([0.5, 2.0, 1.0], dtype=DTYPE)
    _, curv, hypers, sites = _laplace(x, y, gamma)
    full = laplace_log_evidence(LINEAR, _net, (x, y), sites, hypers, curv, len(y))
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]
    split = laplace_log_evidence(LINEAR, _net, halves, sites, hypers, curv, len(y))
    torch.testing.assert_close(split, full)


def test_correlated_design_gives_the_diagonal_approximation_only():
    x, y = _data(orthogonal=False)
    gamma = torch.tensor([0.5, 2.0, 1.0], dtype=DTYPE)
    mean, cov, prec, log_ml = _analytic(x, y, gamma)
    post, curv, hypers, sites = _laplace(x, y, gamma)
    # variance = inverse of the diagonal of the precision, smaller than the true marginal
    torch.testing.assert_close(post.var["w"], 1 / torch.diagonal(prec))
    assert (post.var["w"] < torch.diagonal(cov)).all()
    ev = laplace_log_evidence(LINEAR, _net, (x, y), sites, hypers, curv, len(y))
    assert abs(ev.item() - log_ml.item()) > 1e-3


def test_log_evidence_formula_term_by_term():
    prec = {"a": torch.tensor([2.0, 4.0], dtype=DTYPE), "b": torch.tensor([[0.5]], dtype=DTYPE)}
    ll, lp = torch.tensor(-3.0, dtype=DTYPE), torch.tensor(-1.5, dtype=DTYPE)
    expected = -4.5 + 0.5 * (3 * math.log(2 * math.pi) - math.log(2.0 * 4.0 * 0.5))
    assert log_evidence(ll, lp, prec).item() == pytest.approx(expected)
    flat = torch.tensor([2.0, 4.0, 0.5], dtype=DTYPE)
    assert log_evidence(ll, lp, flat).item() == pytest.approx(expected)


def test_diagonal_laplace_methods():
    mean = {"a": torch.tensor([1.0, -2.0, 0.1], dtype=DTYPE)}
    curv = {"a": torch.tensor([0.1, 0.2, 0.0], dtype=DTYPE)}
    post = fit_diagonal_laplace(mean, curv, num_data=10, prior_precision=torch.tensor(2.0))
    assert isinstance(post, DiagonalLaplace)
    expected_var = 1 / torch.tensor([3.0, 4.0, 2.0], dtype=DTYPE)
    torch.testing.assert_close(post.var["a"], expected_var)
    torch.testing.assert_close(post.precision["a"], 1 / expected_var)
    torch.testing.assert_close(post.z_score()["a"], mean["a"].abs() / expected_var.sqrt())

    samples = post.sample(20000, generator=torch.Generator().manual_seed(0))
    assert samples["a"].shape == (20000, 3)
    torch.testing.assert_close(samples["a"].mean(0), mean["a"], atol=0.02, rtol=0)
    torch.testing.assert_close(samples["a"].var(0), expected_var, atol=0, rtol=0.05)

    ref = torch.distributions.Normal(mean["a"], expected_var.sqrt())
    v = {"a": torch.tensor([0.3, 0.0, -1.0], dtype=DTYPE)}
    torch.testing.assert_close(post.log_prob(v), ref.log_prob(v["a"]).sum())
    batched = post.log_prob({"a": samples["a"][:4]})
    torch.testing.assert_close(batched, ref.log_prob(samples["a"][:4]).sum(-1))


def test_laplace_input_errors():
    with pytest.raises(ValueError, match="shape"):
        fit_diagonal_laplace({"a": torch.zeros(3)}, {"a": torch.zeros(2)}, 5, 1.0)
    with pytest.raises(KeyError, match="curvature missing"):
        fit_diagonal_laplace({"a": torch.zeros(3)}, {}, 5, 1.0)
    with pytest.raises(KeyError, match="no sample sites"):
        joint_terms(LINEAR, _net, (torch.zeros(2, 3), torch.zeros(2)), {"v": torch.zeros(3)},
                    {"gamma": {"w": torch.ones(3)}, "noise_std": 1.0}, 2)
