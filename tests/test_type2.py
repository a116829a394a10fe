"""The type-II outer loop on Bayesian linear regression, where every answer has a closed form."""

from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyronas.inference.type2 import Type2Config, map_objective, run_type2

DTYPE = torch.float64
NOISE = 0.5


def _model(net, x, y, hypers, num_data):
    gamma = hypers["gamma"]["w"]
    with pyro.plate("feature", gamma.shape[0]):
        w = pyro.sample("w", dist.Normal(torch.zeros_like(gamma), gamma.sqrt()))
    with pyro.plate("data", num_data, subsample_size=len(x)):
        pyro.sample("obs", dist.Normal(net(x, w), hypers["noise_std"]), obs=y)


GRADIENT_MODEL = SimpleNamespace(SITES=("w",), model=_model)


class Linear(nn.Module):
    """x @ w + bias; the bias is the 'network weight'."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros((), dtype=DTYPE)) if bias else None

    def forward(self, x, w):
        out = x @ w
        return out if self.bias is None else out + self.bias


def _orthogonal_data(n=40, seed=0):
    """Columns orthogonal with X^T X = n I (a standardised orthogonal design)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, generator=gen, dtype=DTYPE))
    x = q * n**0.5
    w_true = torch.tensor([1.0, -0.5, 0.3], dtype=DTYPE)
    y = x @ w_true + NOISE * torch.randn(n, generator=gen, dtype=DTYPE)
    return x, y


def test_map_objective_minimiser_is_the_analytic_posterior_mean():
    x, y = _orthogonal_data()
    x = x + 0.3 * x[:, :1]  # correlated columns: the MAP is exact whatever the design
    gamma = torch.tensor([0.5, 2.0, 0.1], dtype=DTYPE)
    hypers = {"gamma": {"w": gamma}, "noise_std": NOISE}
    w = torch.zeros(3, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = map_objective(GRADIENT_MODEL, Linear(), {"w": w}, x, y, hypers, len(y))
        loss.backward()
        return loss

    opt.step(closure)
    prec = x.T @ x / NOISE**2 + torch.diag(1 / gamma)
    expected = torch.linalg.solve(prec, x.T @ y / NOISE**2)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-6, atol=1e-8)


def test_evidence_gradient_path_finds_the_evidence_maximiser():
    x, y = _orthogonal_data()
    n = len(y)
    hypers = {"gamma": {"w": torch.ones(3, dtype=DTYPE).requires_grad_(True)}, "noise_std": NOISE}
    cfg = Type2Config(
        t_max=6, epochs_per_iter=30, lr=0.2, momentum=0.0, likelihood="gaussian",
        noise_std=NOISE, threshold=None, hyper_steps=150, hyper_lr=0.05, curvature_batches=1,
        progress=False,
    )
    records = []
    state = run_type2(
        GRADIENT_MODEL, Linear(), {"w": torch.zeros(3, dtype=DTYPE)}, hypers, [(x, y)], [(x, y)],
        n, cfg, callback=lambda record, st: records.append(record),
    )
    # orthogonal design: the evidence factorises and gamma_i* = b_i^2 - s^2/d_i, b = X^T y / d
    d = (x**2).sum(0)
    b = x.T @ y / d
    expected = b**2 - NOISE**2 / d
    assert (expected > 0).all()
    torch.testing.assert_close(state.hypers["gamma"]["w"].detach(), expected, rtol=0.02, atol=0)
    assert state.hypers["gamma"]["w"].requires_grad  # stays marked learnable
    # evidence recorded per iteration, increasing towards the maximum
    assert [r["iteration"] for r in records] == list(range(1, 7))
    assert all(r["hyper_update"] == "evidence_gradient" for r in records)
    evidences = [r["log_evidence"] for r in records]
    assert evidences[-1] > evidences[0]
    marg = NOISE**2 * torch.eye(n, dtype=DTYPE) + x @ torch.diag(expected) @ x.T
    best = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=DTYPE), marg).log_prob(y)
    assert evidences[-1] == pytest.approx(best.item(), abs=1e-3)
    # the posterior is the analytic one at the final MAP
    post = state.posterior
    torch.testing.assert_close(post.curvature["w"], d / n / NOISE**2)


def _closed_form_model(new_gamma):
    """Gradient model plus an update_hypers that returns fixed gammas (to test pruning)."""

    def update_hypers(posterior, hypers):
        assert set(posterior.mean) == {"w"}
        return {**hypers, "gamma": {"w": new_gamma.clone()}}

    return SimpleNamespace(SITES=("w",), model=_model, update_hypers=update_hypers)


def test_pruned_sites_are_zeroed_and_frozen_and_callback_sees_them():
    x, y = _orthogonal_data()
    model = _closed_form_model(torch.tensor([1.0, 1e-6, 1.0], dtype=DTYPE))
    hypers = {"gamma": {"w": torch.ones(3, dtype=DTYPE)}, "noise_std": NOISE}
    seen = []

    def callback(record, state):
        seen.append((record["live"]["w"], state.sites["w"].detach().clone()))

    cfg = Type2Config(t_max=2, epochs_per_iter=5, lr=0.1, likelihood="gaussian", noise_std=NOISE,
                      threshold=1e-4, progress=False)
    state = run_type2(model, Linear(bias=True), {"w": torch.zeros(3, dtype=DTYPE)}, hypers,
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
    model = _closed_form_model(torch.ones(3, dtype=DTYPE))
    hypers = {"gamma": {"w": torch.ones(3, dtype=DTYPE)}, "noise_std": NOISE}
    cfg = Type2Config(t_max=1, epochs_per_iter=30, lr=0.2, momentum=0.0, likelihood="gaussian",
                      noise_std=NOISE, threshold=None, z_threshold=3.0, progress=False)
    state = run_type2(model, Linear(), {"w": torch.zeros(3, dtype=DTYPE)}, hypers,
                      [(x, y)], [(x, y)], len(y), cfg)
    z = state.posterior.z_score()["w"]
    assert state.masks["w"].tolist() == (z >= 3.0).tolist()
    assert state.masks["w"][0] and not state.masks["w"][1:].any()


def test_released_schedule_warm_up_trains_weights_only():
    x, y = _orthogonal_data()
    batches = [(x[i : i + 4], y[i : i + 4] + 3.0) for i in range(0, 40, 4)]  # 10 batches
    net = Linear(bias=True)
    hypers = {"gamma": {"w": torch.ones(3, dtype=DTYPE)}, "noise_std": NOISE}
    cfg = Type2Config(t_max=0, schedule="released", lr=0.05, likelihood="gaussian",
                      noise_std=NOISE, progress=False)
    state = run_type2(_closed_form_model(torch.ones(3, dtype=DTYPE)), net,
                      {"w": torch.ones(3, dtype=DTYPE)}, hypers, batches, batches, len(x), cfg)
    assert state.records == []
    torch.testing.assert_close(state.sites["w"].detach(), torch.ones(3, dtype=DTYPE))
    assert net.bias.item() > 0  # one warm-up step (10% of 10 batches) moved the bias towards 3

    counted = []

    class Counting(list):
        def __iter__(self):
            for item in super().__iter__():
                counted.append(item[0].shape[0])
                yield item

    cfg = Type2Config(t_max=1, schedule="released", lr=0.05, likelihood="gaussian",
                      noise_std=NOISE, curvature_batches=2, progress=False)
    state = run_type2(_closed_form_model(torch.ones(3, dtype=DTYPE)), Linear(bias=True),
                      {"w": torch.ones(3, dtype=DTYPE)}, hypers, Counting(batches), batches,
                      len(x), cfg)
    # one warm-up batch; the site epoch draws all ten and skips the warm-up one
    assert len(counted) == 1 + 10
    assert not torch.equal(state.sites["w"].detach(), torch.ones(3, dtype=DTYPE))


def test_config_and_site_errors():
    with pytest.raises(ValueError, match="schedule"):
        Type2Config(schedule="weekly")
    x, y = _orthogonal_data()
    with pytest.raises(ValueError, match="SITES"):
        run_type2(GRADIENT_MODEL, Linear(), {"v": torch.zeros(3)}, {}, [(x, y)], [(x, y)], 40)
    bad = SimpleNamespace(SITES=("w",), model=_model,
                          update_hypers=lambda p, h: {**h, "gamma": {"w": torch.ones(2)}})
    hypers = {"gamma": {"w": torch.ones(3, dtype=DTYPE)}, "noise_std": NOISE}
    with pytest.raises(ValueError, match="site_gamma"):
        run_type2(bad, Linear(), {"w": torch.zeros(3, dtype=DTYPE)}, hypers, [(x, y)], [(x, y)],
                  40, Type2Config(t_max=1, likelihood="gaussian", progress=False))
