"""The shared maths test bed checks itself: each closed form against an independent identity."""

import pytest
import torch
from mathbed import (
    DT,
    TIGHT,
    LinearGaussian,
    ard_alpha,
    ard_fixed_point,
    assert_sites_close,
    brute_ggn,
    brute_ggn_matrix,
    brute_hessian,
    correlated_design,
    diagonal_design,
    flatten_sites,
    gated_conv_case,
    linear_forward,
    orthogonal_design,
    rng,
    simulate,
    split_forward,
    split_sites,
    tiny_switch_case,
    unflatten_sites,
)
from torch.func import hessian

NOISE = 0.4


def _problem() -> LinearGaussian:
    gen = rng(0)
    x = correlated_design(30, 4, 0.7, gen)
    return LinearGaussian(x, simulate(x, [1.0, -0.5, 0.2, 0.8], NOISE, gen), NOISE)


def _log_joint(problem: LinearGaussian, w: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    lik = torch.distributions.Normal(problem.x @ w, problem.noise_std).log_prob(problem.y).sum()
    return lik + torch.distributions.Normal(0.0, gamma.sqrt()).log_prob(w).sum()


def test_posterior_is_the_stationary_point_and_curvature_of_the_log_joint():
    problem = _problem()
    gamma = torch.tensor([0.5, 2.0, 1.0, 0.3], dtype=DT)
    post = problem.posterior(gamma)
    w = post.mean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_log_joint(problem, w, gamma), w)
    torch.testing.assert_close(grad, torch.zeros(4, dtype=DT), rtol=0, atol=1e-10)
    neg_hess = -hessian(lambda v: _log_joint(problem, v, gamma))(post.mean)
    torch.testing.assert_close(neg_hess, post.precision, **TIGHT)
    torch.testing.assert_close(post.covariance @ post.precision, torch.eye(4, dtype=DT), **TIGHT)


def test_log_evidence_is_bayes_rule_at_any_weights():
    """log p(y) = log p(y | w) + log p(w) - log p(w | y), whatever w."""
    problem = _problem()
    gamma = torch.tensor([0.5, 2.0, 1.0, 0.3], dtype=DT)
    post = problem.posterior(gamma)
    exact = torch.distributions.MultivariateNormal(post.mean, post.covariance)
    for w in torch.randn(3, 4, generator=rng(1), dtype=DT):
        bayes = _log_joint(problem, w, gamma) - exact.log_prob(w)
        torch.testing.assert_close(bayes, problem.log_evidence(gamma), **TIGHT)


def test_evidence_maximiser_of_an_orthogonal_design_is_stationary():
    gen = rng(2)
    x = orthogonal_design(40, [6.0, 4.0, 2.0], gen)
    torch.testing.assert_close(x.T @ x, torch.diag(torch.tensor([36.0, 16.0, 4.0], dtype=DT)),
                               **TIGHT)
    problem = LinearGaussian(x, simulate(x, [1.0, -0.5, 0.3], 0.5, gen), 0.5)
    best = problem.evidence_maximiser()
    assert (best > 0).all()
    at = best.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(problem.log_evidence(at), at)
    assert grad.abs().max() < 1e-8
    assert problem.log_evidence(best) > problem.log_evidence(1.1 * best)
    assert problem.log_evidence(best) > problem.log_evidence(0.9 * best)
    with pytest.raises(AssertionError, match="not orthogonal"):
        _problem().evidence_maximiser()


def test_ard_fixed_point_solves_its_equation():
    s = torch.tensor([1.5, -0.7, 0.01, 0.2], dtype=DT)
    ht = torch.tensor([10.0, 3.0, 8.0, 0.5], dtype=DT)
    gamma = ard_fixed_point(s, ht)
    torch.testing.assert_close(gamma, s.abs() / ard_alpha(gamma, ht).sqrt(), **TIGHT)
    sigma = 1 / (1 / gamma + ht)
    torch.testing.assert_close(ard_alpha(gamma, ht), 1 / gamma - sigma / gamma**2, **TIGHT)


def test_brute_force_curvature_of_the_linear_gaussian_model_is_the_closed_form():
    problem = _problem()
    w = {"w": torch.randn(4, generator=rng(3), dtype=DT)}
    ggn = brute_ggn_matrix(linear_forward, w, problem.x, "gaussian", NOISE)
    torch.testing.assert_close(ggn, problem.ggn(), **TIGHT)
    # two sites flatten to the same matrix; the model is linear, so the Hessian is the GGN
    split = brute_ggn_matrix(split_forward, split_sites(w["w"]), problem.x, "gaussian", NOISE)
    torch.testing.assert_close(split, problem.ggn(), **TIGHT)
    hess = brute_hessian(linear_forward, w, problem.x, problem.y, "gaussian", NOISE)
    torch.testing.assert_close(hess["w"], torch.diagonal(problem.ggn()), **TIGHT)


def test_site_flattening_round_trips():
    sites = {"u": torch.randn(2, 3, dtype=DT), "v": torch.tensor(1.5, dtype=DT)}
    flat = flatten_sites(sites)
    assert flat.shape == (7,)
    assert_sites_close(unflatten_sites(flat, sites), sites, rtol=0, atol=0)


def test_switch_cases_are_seeded_and_curved():
    a, b = tiny_switch_case(), tiny_switch_case()
    assert torch.equal(a.x, b.x) and torch.equal(a.net.bn.running_var, b.net.bn.running_var)
    assert not torch.equal(a.net.bn.running_var, torch.ones(3, dtype=DT))
    conv = gated_conv_case()
    diag = brute_ggn(conv.forward, conv.sites, conv.x, "categorical")
    assert all((v > 0).all() for v in diag.values())
    x = diagonal_design(8, 4, rng(4))
    assert ((x != 0).sum(1) == 1).all()
