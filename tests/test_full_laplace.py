"""Full-covariance Laplace against the closed forms of Bayesian linear regression (float64).

Model: y = X w + eps, eps ~ N(0, s^2 I), w ~ N(0, Gamma), Gamma = diag(gamma), with a correlated
design (50 x 4, pairwise correlation 0.9). The weights are two sites, ``a`` = w[:2] and
``b`` = w[2:] (shape (1, 2)), so the flattening of several sites is exercised. Posterior
N(m, S) with S = (X^T X / s^2 + Gamma^-1)^-1, m = S X^T y / s^2; evidence
log N(y | 0, s^2 I + X Gamma X^T). The full Laplace approximation is exact for any design.
"""

import math

import pytest
import torch
from mathbed import (
    DT,
    SPLIT_LINEAR,
    TIGHT,
    LinearGaussian,
    brute_ggn_matrix,
    correlated_design,
    flatten_sites,
    gated_mlp_case,
    rng,
    simulate,
    split_forward,
    split_net,
    split_sites,
)
from torch import Tensor

from pyronas.inference.curvature import diagonal_curvature
from pyronas.inference.diagonal_laplace import fit_diagonal_laplace
from pyronas.inference.evidence import (
    joint_terms,
    laplace_log_evidence,
    trace_log_likelihood,
    trace_log_prior,
    trace_model,
)
from pyronas.inference.full_laplace import (
    FullLaplace,
    SiteLayout,
    block_diagonal,
    fit_full_laplace,
    full_laplace_log_evidence,
    full_log_evidence,
    ggn_matrix,
)

NOISE = 0.4
GAMMA = {"a": torch.tensor([0.5, 2.0], dtype=DT), "b": torch.tensor([[1.0, 0.3]], dtype=DT)}
GAMMA_FLAT = flatten_sites(GAMMA)


def _problem(n: int = 50, rho: float = 0.9) -> LinearGaussian:
    gen = rng(0)
    x = correlated_design(n, 4, rho, gen)
    return LinearGaussian(x, simulate(x, [1.0, -0.5, 0.2, 0.8], NOISE, gen), NOISE)


def _hypers(gamma=GAMMA):
    return {"gamma": gamma, "noise_std": NOISE}


def _fit(problem: LinearGaussian, sites: dict[str, Tensor], groups=None):
    batches = [(problem.x, problem.y)]
    ggn = ggn_matrix(split_forward, sites, batches, "gaussian", NOISE, groups=groups)
    terms = joint_terms(SPLIT_LINEAR, split_net, batches, sites, _hypers(), problem.num_data)
    return fit_full_laplace(sites, ggn, problem.num_data, terms.prior_precision), terms


# --------------------------------------------------------------------------------------------
# closed forms of the linear-Gaussian model


def test_ggn_of_linear_gaussian_model_is_xtx_over_sigma2_and_batches_count_equally():
    problem = _problem()
    x, y = problem.x, problem.y
    sites = split_sites(torch.zeros(4, dtype=DT))
    one = ggn_matrix(split_forward, sites, [(x, y)], "gaussian", NOISE)
    torch.testing.assert_close(one, problem.ggn(), **TIGHT)
    halves = [(x[:25], y[:25]), (x[25:], y[25:])]
    torch.testing.assert_close(ggn_matrix(split_forward, sites, halves, "gaussian", NOISE), one,
                               **TIGHT)
    first = ggn_matrix(split_forward, sites, halves, "gaussian", NOISE, max_batches=1)
    torch.testing.assert_close(first, LinearGaussian(x[:25], y[:25], NOISE).ggn(), **TIGHT)
    torch.testing.assert_close(first, x[:25].T @ x[:25] / (25 * NOISE**2), **TIGHT)


def test_newton_step_lands_on_the_analytic_posterior():
    problem = _problem()
    x, y = problem.x, problem.y
    exact = problem.posterior(GAMMA_FLAT)
    mean, cov, prec = exact.mean, exact.covariance, exact.precision
    # the log joint is quadratic: one Newton step with the Laplace precision finds the MAP
    start = split_sites(torch.zeros(4, dtype=DT))
    post0, _ = _fit(problem, start)
    leaves = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    trace = trace_model(SPLIT_LINEAR, split_net, x, y, leaves, _hypers(), len(y))
    log_joint = trace_log_likelihood(trace) + trace_log_prior(trace, leaves)
    grads = torch.autograd.grad(log_joint, list(leaves.values()))
    step = post0.covariance @ torch.cat([g.reshape(-1) for g in grads])
    post, _ = _fit(problem, split_sites(step))
    torch.testing.assert_close(post0.precision, prec, **TIGHT)
    torch.testing.assert_close(post.flat_mean, mean, **TIGHT)
    torch.testing.assert_close(post.mean["b"], mean[2:].reshape(1, 2), **TIGHT)
    torch.testing.assert_close(post.precision, prec, **TIGHT)
    torch.testing.assert_close(post.covariance, cov, **TIGHT)
    torch.testing.assert_close(post.precision_tril @ post.precision_tril.T, prec, **TIGHT)
    torch.testing.assert_close(post.var["a"], torch.diagonal(cov)[:2], **TIGHT)
    torch.testing.assert_close(post.std["b"], torch.diagonal(cov)[2:].sqrt().reshape(1, 2))
    sd = torch.diagonal(cov).sqrt()
    torch.testing.assert_close(post.correlation, cov / torch.outer(sd, sd), **TIGHT)
    # the correlated design correlates the posterior, and the marginal variances are several
    # times the diagonal fit's 1 / P_ii
    assert post.correlation.min() < -0.4
    assert (torch.diagonal(cov) > 3 / torch.diagonal(prec)).all()
    z = post.z_score()
    torch.testing.assert_close(z["a"], mean[:2].abs() / sd[:2], **TIGHT)
    torch.testing.assert_close(post.sd["b"], post.std["b"])


def test_log_evidence_is_analytic_and_differentiable():
    problem = _problem()
    x, y = problem.x, problem.y
    gamma0 = GAMMA_FLAT
    mean = problem.posterior(gamma0).mean
    sites = split_sites(mean)
    post, terms = _fit(problem, sites)
    log_ml = problem.log_evidence(gamma0)
    torch.testing.assert_close(post.log_evidence(terms.log_lik, terms.log_prior), log_ml, **TIGHT)

    # by hand: log N(y | X m, s^2 I) + log N(m | 0, Gamma) + 1/2 (D log 2 pi - log det P)
    lik = torch.distributions.Normal(x @ mean, NOISE).log_prob(y).sum()
    prior = torch.distributions.Normal(0.0, gamma0.sqrt()).log_prob(mean).sum()
    occam = 0.5 * (4 * math.log(2 * math.pi) - torch.logdet(post.precision))
    torch.testing.assert_close(lik + prior + occam, log_ml, **TIGHT)
    torch.testing.assert_close(post.log_det_precision, torch.logdet(post.precision), **TIGHT)

    gamma = {k: v.clone().requires_grad_(True) for k, v in GAMMA.items()}
    ggn = ggn_matrix(split_forward, sites, [(x, y)], "gaussian", NOISE)
    ev = full_laplace_log_evidence(SPLIT_LINEAR, split_net, (x, y), sites, _hypers(gamma), ggn,
                                   len(y))
    grad = torch.autograd.grad(ev, list(gamma.values()))
    gamma_ref = gamma0.clone().requires_grad_(True)
    log_ml_ref = problem.log_evidence(gamma_ref)
    (grad_ref,) = torch.autograd.grad(log_ml_ref, gamma_ref)
    torch.testing.assert_close(ev.detach(), log_ml, **TIGHT)
    # the MAP is a stationary point of the log joint: the partial derivative is the total one
    torch.testing.assert_close(torch.cat([g.reshape(-1) for g in grad]), grad_ref, **TIGHT)


def test_full_log_evidence_formula():
    tril = torch.tensor([[2.0, 0.0], [0.5, 3.0]], dtype=DT)
    ll, lp = torch.tensor(-3.0, dtype=DT), torch.tensor(-1.5, dtype=DT)
    expected = -4.5 + 0.5 * (2 * math.log(2 * math.pi) - math.log(36.0))
    assert full_log_evidence(ll, lp, tril).item() == pytest.approx(expected, rel=1e-14)


# --------------------------------------------------------------------------------------------
# block-diagonal option and the diagonal fit


def test_one_block_is_the_full_matrix_and_singleton_blocks_the_diagonal_fit():
    problem = _problem()
    x, y = problem.x, problem.y
    sites = split_sites(problem.posterior(GAMMA_FLAT).mean)
    full, terms = _fit(problem, sites)
    one, _ = _fit(problem, sites, groups={"a": torch.tensor(7), "b": torch.tensor(7)})
    torch.testing.assert_close(one.precision, full.precision, **TIGHT)
    torch.testing.assert_close(one.covariance, full.covariance, **TIGHT)

    single, _ = _fit(problem, sites, groups=torch.arange(4))
    curv = diagonal_curvature(split_forward, sites, [(x, y)], likelihood="gaussian",
                              noise_std=NOISE)
    diag = fit_diagonal_laplace(sites, curv, len(y), terms.prior_precision)
    for k in sites:
        torch.testing.assert_close(single.var[k], diag.var[k], **TIGHT)
    ev_single = single.log_evidence(terms.log_lik, terms.log_prior)
    ev_diag = laplace_log_evidence(SPLIT_LINEAR, split_net, (x, y), sites, _hypers(), curv,
                                   len(y))
    torch.testing.assert_close(ev_single, ev_diag.detach(), **TIGHT)
    assert abs(ev_diag.item() - full.log_evidence(terms.log_lik, terms.log_prior).item()) > 1e-2

    # two blocks: {a} and {b}: the covariance is the inverse of each precision block
    two, _ = _fit(problem, sites, groups={"a": torch.tensor(0), "b": torch.tensor(1)})
    blocks = block_diagonal(full.precision, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(two.precision, blocks, **TIGHT)
    assert torch.equal(two.covariance[:2, 2:], torch.zeros(2, 2, dtype=DT))
    torch.testing.assert_close(two.covariance[:2, :2], torch.linalg.inv(blocks[:2, :2]), **TIGHT)


def test_diagonal_reproduces_fit_diagonal_laplace_on_a_classifier():
    net, forward, sites, x, y = gated_mlp_case(seed=5, batch=12)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]

    prior = {"gate": torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=DT), "scale": 3.0}
    ggn = ggn_matrix(forward, sites, batches, module=net)
    torch.testing.assert_close(ggn, brute_ggn_matrix(forward, sites, x, "categorical"), **TIGHT)
    post = fit_full_laplace(sites, ggn, 300, prior)
    curv = diagonal_curvature(forward, sites, batches, backend="ggn", module=net)
    ref = fit_diagonal_laplace(sites, curv, 300, prior)
    diag = post.diagonal()
    for k in sites:
        torch.testing.assert_close(diag.mean[k], ref.mean[k], **TIGHT)
        torch.testing.assert_close(diag.curvature[k], ref.curvature[k], **TIGHT)
        torch.testing.assert_close(diag.var[k], ref.var[k], **TIGHT)
        torch.testing.assert_close(diag.prior_var[k], torch.broadcast_to(ref.prior_var[k],
                                                                         sites[k].shape))
    # the joint posterior precision is N * GGN + diag(prior); its marginal variances are larger
    torch.testing.assert_close(
        post.precision, 300 * ggn + torch.diag(torch.tensor([1, 2, 0.5, 4, 3], dtype=DT)), **TIGHT
    )
    assert (post.layout.flatten(post.var) >= post.layout.flatten(diag.var) - 1e-15).all()


# --------------------------------------------------------------------------------------------
# draws, density, layout, errors


def _small_posterior() -> FullLaplace:
    problem = _problem()
    post, _ = _fit(problem, split_sites(problem.posterior(GAMMA_FLAT).mean))
    return post


def test_draws_have_the_posterior_mean_and_covariance():
    post = _small_posterior()
    draws = post.sample(200_000, torch.Generator().manual_seed(1))
    assert draws["a"].shape == (200_000, 2) and draws["b"].shape == (200_000, 1, 2)
    flat = post.layout.flatten(draws)
    sd = torch.diagonal(post.covariance).sqrt()
    torch.testing.assert_close(flat.mean(0), post.flat_mean, rtol=0, atol=(0.02 * sd).max())
    emp = torch.cov(flat.T)
    torch.testing.assert_close(emp / torch.outer(sd, sd), post.correlation, rtol=0, atol=0.02)
    torch.testing.assert_close(emp.diagonal() / sd**2, torch.ones(4, dtype=DT), rtol=0, atol=0.02)
    again = post.sample(200_000, torch.Generator().manual_seed(1))
    assert torch.equal(again["b"], draws["b"])


def test_log_prob_is_the_multivariate_normal_density():
    post = _small_posterior()
    draws = post.sample(5, torch.Generator().manual_seed(2))
    mvn = torch.distributions.MultivariateNormal(post.flat_mean, precision_matrix=post.precision)
    torch.testing.assert_close(post.log_prob(draws), mvn.log_prob(post.layout.flatten(draws)),
                               **TIGHT)
    assert post.log_prob(post.mean).shape == ()


def test_site_layout_round_trip_and_group_ids():
    sites = {"u": torch.zeros(2, 3), "v": torch.zeros(()), "w": torch.zeros(4)}
    layout = SiteLayout.of(sites)
    assert layout.size == 11 and layout.sizes == (6, 1, 4)
    flat = torch.arange(2 * 11.0).reshape(2, 11)
    parts = layout.unflatten(flat)
    assert parts["u"].shape == (2, 2, 3) and parts["v"].shape == (2,)
    torch.testing.assert_close(layout.flatten(parts), flat)
    ids = layout.group_ids({"u": torch.tensor([[0], [1]]), "v": torch.tensor(2), "w": 3})
    assert ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="ids"):
        layout.group_ids(torch.arange(3))
    with pytest.raises(ValueError, match="integers"):
        layout.group_ids(torch.zeros(11))
    with pytest.raises(ValueError, match="shape"):
        layout.flatten({"u": torch.zeros(3, 2), "v": torch.zeros(()), "w": torch.zeros(4)})


def test_input_errors():
    sites = {"a": torch.ones(2, dtype=DT)}
    ggn = torch.eye(2, dtype=DT)
    with pytest.raises(ValueError, match="num_data"):
        fit_full_laplace(sites, ggn, 0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        fit_full_laplace(sites, torch.eye(3, dtype=DT), 10, 1.0)
    with pytest.raises(KeyError, match="b"):
        fit_full_laplace({**sites, "b": torch.ones(1, dtype=DT)}, torch.eye(3, dtype=DT), 10,
                         {"a": 1.0})
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=DT)
    with pytest.raises(ValueError, match="positive definite"):
        fit_full_laplace(sites, indefinite, 10, 0.0)
    fit_full_laplace(sites, indefinite, 10, 11.0)  # a strong enough prior makes it definite
    # a flat prior on an uninformed element: clamped to min_precision, as in the diagonal fit
    flat = fit_full_laplace(sites, torch.diag(torch.tensor([1.0, 0.0], dtype=DT)), 10, 0.0)
    torch.testing.assert_close(flat.var["a"], torch.tensor([0.1, 1e10], dtype=DT))
    with pytest.raises(ValueError, match="no batches"):
        ggn_matrix(split_forward, split_sites(torch.zeros(4, dtype=DT)), [], "gaussian")
    with pytest.raises(ValueError, match="no sites"):
        ggn_matrix(split_forward, {}, [(torch.zeros(1, 4), torch.zeros(1))], "gaussian")
