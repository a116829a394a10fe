"""The type-II outer loop on Bayesian linear regression, where every answer has a closed form."""

import math
from types import SimpleNamespace

import pytest
import torch
from mathbed import (
    DT,
    LINEAR,
    LinearGaussian,
    LinearNet,
    correlated_design,
    linear_model,
    orthogonal_design,
    rng,
    simulate,
)

from pyronas.inference.type2 import Type2Config, map_objective, run_type2

NOISE = 0.5


def _orthogonal_problem(n: int = 40, seed: int = 0) -> LinearGaussian:
    """Columns orthogonal with X^T X = n I (a standardised orthogonal design)."""
    gen = rng(seed)
    x = orthogonal_design(n, [n**0.5] * 3, gen)
    return LinearGaussian(x, simulate(x, [1.0, -0.5, 0.3], NOISE, gen), NOISE)


def _orthogonal_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    problem = _orthogonal_problem(n, seed)
    return problem.x, problem.y


def test_map_objective_minimiser_is_the_analytic_posterior_mean():
    x, y = _orthogonal_data()
    x = x + 0.3 * x[:, :1]  # correlated columns: the MAP is exact whatever the design
    problem = LinearGaussian(x, y, NOISE)
    gamma = torch.tensor([0.5, 2.0, 0.1], dtype=DT)
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    w = torch.zeros(3, dtype=DT, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = map_objective(LINEAR, LinearNet(), {"w": w}, x, y, hypers, len(y))
        loss.backward()
        return loss

    opt.step(closure)
    expected = problem.posterior(gamma).mean
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-8)


def test_evidence_gradient_path_finds_the_evidence_maximiser():
    problem = _orthogonal_problem()
    x, y, n = problem.x, problem.y, problem.num_data
    hypers = {"gamma": {"w": torch.ones(3, dtype=DT).requires_grad_(True)}, "noise_std": NOISE}
    cfg = Type2Config(
        t_max=6, epochs_per_iter=30, lr=0.2, momentum=0.0, likelihood="gaussian",
        noise_std=NOISE, threshold=None, hyper_steps=150, hyper_lr=0.05, curvature_batches=1,
        progress=False,
    )
    records = []
    state = run_type2(
        LINEAR, LinearNet(), {"w": torch.zeros(3, dtype=DT)}, hypers, [(x, y)], [(x, y)],
        n, cfg, callback=lambda record, st: records.append(record),
    )
    # orthogonal design: the evidence factorises and gamma_i* = b_i^2 - s^2/d_i, b = X^T y / d
    expected = problem.evidence_maximiser()
    assert (expected > 0).all()
    at_max = expected.clone().requires_grad_(True)
    (slope,) = torch.autograd.grad(problem.log_evidence(at_max), at_max)
    assert slope.abs().max() < 1e-8  # the closed form is a stationary point of the evidence
    torch.testing.assert_close(state.hypers["gamma"]["w"].detach(), expected, rtol=0.02, atol=0)
    assert state.hypers["gamma"]["w"].requires_grad  # stays marked learnable
    # evidence recorded per iteration, increasing towards the maximum
    assert [r["iteration"] for r in records] == list(range(1, 7))
    assert all(r["hyper_update"] == "evidence_gradient" for r in records)
    evidences = [r["log_evidence"] for r in records]
    assert evidences[-1] > evidences[0]
    assert evidences[-1] == pytest.approx(problem.log_evidence(expected).item(), abs=1e-3)
    # the posterior is the analytic one at the final MAP
    post = state.posterior
    torch.testing.assert_close(post.curvature["w"], (x**2).sum(0) / n / NOISE**2)
    torch.testing.assert_close(post.curvature["w"], torch.diagonal(problem.ggn()))


def _closed_form_model(new_gamma):
    """Gradient model plus an update_hypers that returns fixed gammas (to test pruning)."""

    def update_hypers(posterior, hypers):
        assert set(posterior.mean) == {"w"}
        return {**hypers, "gamma": {"w": new_gamma.clone()}}

    return SimpleNamespace(SITES=("w",), model=linear_model, update_hypers=update_hypers)


def test_pruned_sites_are_zeroed_and_frozen_and_callback_sees_them():
    x, y = _orthogonal_data()
    model = _closed_form_model(torch.tensor([1.0, 1e-6, 1.0], dtype=DT))
    hypers = {"gamma": {"w": torch.ones(3, dtype=DT)}, "noise_std": NOISE}
    seen = []

    def callback(record, state):
        seen.append((record["live"]["w"], state.sites["w"].detach().clone()))

    cfg = Type2Config(t_max=2, epochs_per_iter=5, lr=0.1, likelihood="gaussian", noise_std=NOISE,
                      threshold=1e-4, progress=False)
    state = run_type2(model, LinearNet(bias=True), {"w": torch.zeros(3, dtype=DT)}, hypers,
                      [(x, y)], [(x, y)], len(y), cfg, callback=callback)
    assert [live for live, _ in seen] == [2, 2]
    assert state.masks["w"].tolist() == [True, False, True]
    # zero at the end of iteration 1 and still zero after the MAP epochs of iteration 2
    assert seen[0][1][1] == 0 and seen[1][1][1] == 0
    assert seen[1][1][0] != 0
    assert all(r["hyper_update"] == "closed_form" for r in state.records)


def test_z_threshold_prunes_small_posterior_z_scores():
    x, y = _orthogonal_data()
    y = x[:, 0] * 1.0 + 0.01 * y  # features 1 and 2 irrelevant, tiny noise
    model = _closed_form_model(torch.ones(3, dtype=DT))
    hypers = {"gamma": {"w": torch.ones(3, dtype=DT)}, "noise_std": NOISE}
    cfg = Type2Config(t_max=1, epochs_per_iter=30, lr=0.2, momentum=0.0, likelihood="gaussian",
                      noise_std=NOISE, threshold=None, z_threshold=3.0, progress=False)
    state = run_type2(model, LinearNet(), {"w": torch.zeros(3, dtype=DT)}, hypers,
                      [(x, y)], [(x, y)], len(y), cfg)
    z = state.posterior.z_score()["w"]
    assert state.masks["w"].tolist() == (z >= 3.0).tolist()
    assert state.masks["w"][0] and not state.masks["w"][1:].any()


def test_released_schedule_warm_up_trains_weights_only():
    x, y = _orthogonal_data()
    batches = [(x[i : i + 4], y[i : i + 4] + 3.0) for i in range(0, 40, 4)]  # 10 batches
    net = LinearNet(bias=True)
    hypers = {"gamma": {"w": torch.ones(3, dtype=DT)}, "noise_std": NOISE}
    cfg = Type2Config(t_max=0, schedule="released", lr=0.05, likelihood="gaussian",
                      noise_std=NOISE, progress=False)
    state = run_type2(_closed_form_model(torch.ones(3, dtype=DT)), net,
                      {"w": torch.ones(3, dtype=DT)}, hypers, batches, batches, len(x), cfg)
    assert state.records == []
    torch.testing.assert_close(state.sites["w"].detach(), torch.ones(3, dtype=DT))
    assert net.bias.item() > 0  # one warm-up step (10% of 10 batches) moved the bias towards 3

    counted = []

    class Counting(list):
        def __iter__(self):
            for item in super().__iter__():
                counted.append(item[0].shape[0])
                yield item

    cfg = Type2Config(t_max=1, schedule="released", lr=0.05, likelihood="gaussian",
                      noise_std=NOISE, curvature_batches=2, progress=False)
    state = run_type2(_closed_form_model(torch.ones(3, dtype=DT)), LinearNet(bias=True),
                      {"w": torch.ones(3, dtype=DT)}, hypers, Counting(batches), batches,
                      len(x), cfg)
    # one warm-up batch; the site epoch draws all ten and skips the warm-up one
    assert len(counted) == 1 + 10
    assert not torch.equal(state.sites["w"].detach(), torch.ones(3, dtype=DT))


def test_config_and_site_errors():
    with pytest.raises(ValueError, match="schedule"):
        Type2Config(schedule="weekly")
    x, y = _orthogonal_data()
    with pytest.raises(ValueError, match="SITES"):
        run_type2(LINEAR, LinearNet(), {"v": torch.zeros(3)}, {}, [(x, y)], [(x, y)], 40)
    bad = SimpleNamespace(SITES=("w",), model=linear_model,
                          update_hypers=lambda p, h: {**h, "gamma": {"w": torch.ones(2)}})
    hypers = {"gamma": {"w": torch.ones(3, dtype=DT)}, "noise_std": NOISE}
    with pytest.raises(ValueError, match="site_gamma"):
        run_type2(bad, LinearNet(), {"w": torch.zeros(3, dtype=DT)}, hypers, [(x, y)], [(x, y)],
                  40, Type2Config(t_max=1, likelihood="gaussian", progress=False))


def _fixed_hypers_model():
    """The linear model with an update_hypers that keeps gamma and records the posteriors."""
    seen = []

    def update_hypers(posterior, hypers):
        seen.append(posterior)
        return dict(hypers)

    return SimpleNamespace(SITES=("w",), model=linear_model, update_hypers=update_hypers), seen


@pytest.mark.parametrize("laplace", ["full", "block"])
def test_full_laplace_loop_uses_the_full_covariance_on_a_correlated_design(laplace):
    gen = rng(3)
    x = correlated_design(60, 3, 0.9, gen)
    problem = LinearGaussian(x, simulate(x, [1.0, -0.5, 0.3], NOISE, gen), NOISE)
    gamma = torch.tensor([0.7, 1.5, 0.2], dtype=DT)
    exact = problem.posterior(gamma)
    runs = {}
    for form in ("diag", laplace):
        model, seen = _fixed_hypers_model()
        cfg = Type2Config(t_max=1, epochs_per_iter=400, lr=0.05, momentum=0.0,
                          likelihood="gaussian", noise_std=NOISE, threshold=None,
                          curvature_batches=1, progress=False, laplace=form)
        state = run_type2(model, LinearNet(), {"w": torch.zeros(3, dtype=DT)},
                          {"gamma": {"w": gamma}, "noise_std": NOISE}, [(x, problem.y)],
                          [(x, problem.y)], problem.num_data, cfg)
        runs[form] = (state, seen[0], state.records[0]["log_evidence"])
    state, posterior, evidence = runs[laplace]
    # one site of shape (3,): "block" (blocks over the leading index) keeps no cross terms
    # between w_i and w_j only when the site has a leading group dim; here each w_i is its
    # own leading index, so "block" is the diagonal GGN and "full" the full one
    if laplace == "full":
        torch.testing.assert_close(posterior.var["w"], torch.diagonal(exact.covariance),
                                   rtol=1e-10, atol=1e-12)
        # the diagonal fit is over-confident on correlated features: 1 / P_ii < Sigma_ii
        assert (runs["diag"][1].var["w"] < 0.9 * posterior.var["w"]).all()
        # the evidence at the loop's final mean is the full-Laplace formula
        mean = state.sites["w"].detach()
        lik = torch.distributions.Normal(x @ mean, NOISE).log_prob(problem.y).sum()
        prior = torch.distributions.Normal(0.0, gamma.sqrt()).log_prob(mean).sum()
        occam = 0.5 * (3 * math.log(2 * math.pi) - torch.logdet(exact.precision))
        assert evidence == pytest.approx(float(lik + prior + occam), rel=1e-9)
        # the SGD mean is close to the exact MAP, so this is the exact log evidence
        assert evidence == pytest.approx(float(problem.log_evidence(gamma)), abs=1e-3)
        # the marginal curvature gives Sigma_ii back through the diagonal formula
        n = problem.num_data
        back = 1.0 / (n * posterior.curvature["w"] + 1.0 / gamma)
        torch.testing.assert_close(back, torch.diagonal(exact.covariance), rtol=1e-10, atol=1e-12)
    else:
        torch.testing.assert_close(posterior.var["w"], runs["diag"][1].var["w"],
                                   rtol=1e-10, atol=1e-12)
        assert evidence == pytest.approx(runs["diag"][2], rel=1e-9)


def test_laplace_form_is_checked():
    with pytest.raises(ValueError, match="laplace must be one of diag, full, block"):
        Type2Config(laplace="kronecker")


def test_full_laplace_needs_the_mean_curvature():
    from pyronas.inference.type2 import Type2Config

    Type2Config(laplace="diag", curvature_reduction="sum")  # the diagonal form takes either
    for form in ("full", "block"):
        with pytest.raises(ValueError, match="curvature_reduction must be 'mean'"):
            Type2Config(laplace=form, curvature_reduction="sum")
