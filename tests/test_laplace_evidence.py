"""Diagonal Laplace posterior and evidence against the closed forms of Bayesian linear regression.

Model: y = X w + eps, eps ~ N(0, s^2 I), w ~ N(0, Gamma), Gamma = diag(gamma). Posterior
N(m, S) with S = (X^T X / s^2 + Gamma^-1)^-1, m = S X^T y / s^2; evidence
log N(y | 0, s^2 I + X Gamma X^T). The DIAGONAL Laplace approximation is exact only when the
posterior precision is diagonal, i.e. X^T X is diagonal: the equality tests use an orthogonal
design (columns of X orthogonal, with different norms). The closed forms are those of
``mathbed.LinearGaussian``.
"""

import math

import pytest
import torch
from mathbed import (
    DT,
    LINEAR,
    TIGHT,
    LinearGaussian,
    LinearNet,
    iid_design,
    linear_forward,
    orthogonal_design,
    rng,
    simulate,
)

from pyronas.inference.curvature import diagonal_curvature
from pyronas.inference.diagonal_laplace import DiagonalLaplace, fit_diagonal_laplace
from pyronas.inference.evidence import joint_terms, laplace_log_evidence, log_evidence

NOISE = 0.3
GAMMA = torch.tensor([0.5, 2.0, 1.0], dtype=DT)
NET = LinearNet()


def _problem(orthogonal: bool, n: int = 12) -> LinearGaussian:
    gen = rng(0)
    x = orthogonal_design(n, [3.0, 1.5, 0.7], gen) if orthogonal else iid_design(n, 3, gen)
    return LinearGaussian(x, simulate(x, [1.0, -0.5, 0.2], NOISE, gen), NOISE)


def _laplace(problem: LinearGaussian, gamma: torch.Tensor):
    x, y = problem.x, problem.y
    sites = {"w": problem.posterior(gamma).mean}
    batches = [(x, y)]
    curv = diagonal_curvature(linear_forward, sites, batches, likelihood="gaussian",
                              noise_std=NOISE)
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    terms = joint_terms(LINEAR, NET, batches, sites, hypers, len(y))
    post = fit_diagonal_laplace(sites, curv, len(y), terms.prior_precision)
    return post, curv, hypers, sites


def test_orthogonal_design_laplace_posterior_is_analytic_posterior():
    problem = _problem(orthogonal=True)
    exact = problem.posterior(GAMMA)
    post, curv, _, _ = _laplace(problem, GAMMA)
    torch.testing.assert_close(post.prior_var["w"], GAMMA, **TIGHT)  # prior precision by autograd
    torch.testing.assert_close(post.mean["w"], exact.mean, **TIGHT)
    torch.testing.assert_close(post.var["w"], torch.diagonal(exact.covariance), **TIGHT)
    torch.testing.assert_close(curv["w"], (problem.x**2).mean(0) / NOISE**2, **TIGHT)
    torch.testing.assert_close(curv["w"], torch.diagonal(problem.ggn()), **TIGHT)


def test_orthogonal_design_evidence_is_analytic_and_differentiable():
    problem = _problem(orthogonal=True)
    x, y = problem.x, problem.y
    _, curv, _, sites = _laplace(problem, GAMMA)
    gamma = GAMMA.clone().requires_grad_(True)
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    ev = laplace_log_evidence(LINEAR, NET, (x, y), sites, hypers, curv, len(y))
    (grad,) = torch.autograd.grad(ev, gamma)

    gamma_ref = GAMMA.clone().requires_grad_(True)
    log_ml = problem.log_evidence(gamma_ref)
    (grad_ref,) = torch.autograd.grad(log_ml, gamma_ref)
    torch.testing.assert_close(ev.detach(), log_ml.detach(), **TIGHT)
    # the MAP is a stationary point of the log joint, so the gradient at fixed sites is the
    # total derivative of the evidence
    torch.testing.assert_close(grad, grad_ref, **TIGHT)


def test_evidence_from_two_half_batches_equals_full_batch():
    problem = _problem(orthogonal=True)
    x, y = problem.x, problem.y
    _, curv, hypers, sites = _laplace(problem, GAMMA)
    full = laplace_log_evidence(LINEAR, NET, (x, y), sites, hypers, curv, len(y))
    halves = [(x[:6], y[:6]), (x[6:], y[6:])]
    split = laplace_log_evidence(LINEAR, NET, halves, sites, hypers, curv, len(y))
    torch.testing.assert_close(split, full, **TIGHT)


def test_correlated_design_gives_the_diagonal_approximation_only():
    problem = _problem(orthogonal=False)
    exact = problem.posterior(GAMMA)
    post, curv, hypers, sites = _laplace(problem, GAMMA)
    # variance = inverse of the diagonal of the precision, smaller than the true marginal
    torch.testing.assert_close(post.var["w"], 1 / torch.diagonal(exact.precision), **TIGHT)
    assert (post.var["w"] < torch.diagonal(exact.covariance)).all()
    ev = laplace_log_evidence(LINEAR, NET, (problem.x, problem.y), sites, hypers, curv,
                              problem.num_data)
    assert abs(ev.item() - problem.log_evidence(GAMMA).item()) > 1e-3


def test_log_evidence_formula_term_by_term():
    prec = {"a": torch.tensor([2.0, 4.0], dtype=DT), "b": torch.tensor([[0.5]], dtype=DT)}
    ll, lp = torch.tensor(-3.0, dtype=DT), torch.tensor(-1.5, dtype=DT)
    expected = -4.5 + 0.5 * (3 * math.log(2 * math.pi) - math.log(2.0 * 4.0 * 0.5))
    assert log_evidence(ll, lp, prec).item() == pytest.approx(expected)
    flat = torch.tensor([2.0, 4.0, 0.5], dtype=DT)
    assert log_evidence(ll, lp, flat).item() == pytest.approx(expected)


def test_diagonal_laplace_methods():
    mean = {"a": torch.tensor([1.0, -2.0, 0.1], dtype=DT)}
    curv = {"a": torch.tensor([0.1, 0.2, 0.0], dtype=DT)}
    post = fit_diagonal_laplace(mean, curv, num_data=10, prior_precision=torch.tensor(2.0))
    assert isinstance(post, DiagonalLaplace)
    expected_var = 1 / torch.tensor([3.0, 4.0, 2.0], dtype=DT)
    torch.testing.assert_close(post.var["a"], expected_var)
    torch.testing.assert_close(post.precision["a"], 1 / expected_var)
    torch.testing.assert_close(post.z_score()["a"], mean["a"].abs() / expected_var.sqrt())

    samples = post.sample(20000, generator=torch.Generator().manual_seed(0))
    assert samples["a"].shape == (20000, 3)
    torch.testing.assert_close(samples["a"].mean(0), mean["a"], atol=0.02, rtol=0)
    torch.testing.assert_close(samples["a"].var(0), expected_var, atol=0, rtol=0.05)

    ref = torch.distributions.Normal(mean["a"], expected_var.sqrt())
    v = {"a": torch.tensor([0.3, 0.0, -1.0], dtype=DT)}
    torch.testing.assert_close(post.log_prob(v), ref.log_prob(v["a"]).sum())
    batched = post.log_prob({"a": samples["a"][:4]})
    torch.testing.assert_close(batched, ref.log_prob(samples["a"][:4]).sum(-1))


def test_laplace_input_errors():
    with pytest.raises(ValueError, match="shape"):
        fit_diagonal_laplace({"a": torch.zeros(3)}, {"a": torch.zeros(2)}, 5, 1.0)
    with pytest.raises(KeyError, match="curvature missing"):
        fit_diagonal_laplace({"a": torch.zeros(3)}, {}, 5, 1.0)
    with pytest.raises(KeyError, match="no sample sites"):
        joint_terms(LINEAR, NET, (torch.zeros(2, 3), torch.zeros(2)), {"v": torch.zeros(3)},
                    {"gamma": {"w": torch.ones(3)}, "noise_std": 1.0}, 2)
