"""The group-HARD prior over network weights: contract, closed forms, curvature per weight."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from mathbed import DT, TIGHT, brute_ggn, orthogonal_design, randomise_batch_norms, rng
from pyro import poutine
from torch import nn

from pyronas.inference.ard_update import ard_fixed_point
from pyronas.inference.curvature import diagonal_curvature
from pyronas.inference.diagonal_laplace import DiagonalLaplace
from pyronas.inference.evidence import joint_terms
from pyronas.inference.grouped_ard import (
    Grouping,
    crossed_ard_fixed_point,
    effective_variance,
    group_norms,
)
from pyronas.inference.type2 import Type2Config, run_type2
from pyronas.models import group_hard

NUM_DATA = 40


class TinyMLP(nn.Module):
    """``fc1 -> relu -> fc2 -> relu -> fc3``: (B, 5) -> (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(5, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class TinyCNN(nn.Module):
    """``conv1 -> bn -> relu -> conv2 -> relu -> max pool -> fc``: (B, 2, 6, 6) -> (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.fc(torch.flatten(torch.max_pool2d(h, 2), 1))


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")
            and p.dim() >= 2}


def _case(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    net = (TinyMLP() if kind == "mlp" else TinyCNN()).to(DT)
    randomise_batch_norms(net)
    net.eval()
    x = torch.randn(6, 5, dtype=DT) if kind == "mlp" else torch.randn(6, 2, 6, 6, dtype=DT)
    y = torch.randint(0, 3, (6,))
    return net, _weights(net), x, y


# ---------------------------------------------------------------------------------- contract


def test_effective_variance_adds_precisions_and_zero_switches_off() -> None:
    rows, cols = torch.tensor([1.0, 2.0], dtype=DT), torch.tensor([4.0, 0.0, 0.5], dtype=DT)
    eff = effective_variance([rows, cols], [Grouping.along((2, 3), 0), Grouping.along((2, 3), 1)])
    expected = 1 / (1 / rows[:, None] + 1 / cols[None, :])
    expected[:, 1] = 0.0
    torch.testing.assert_close(eff, expected, **TIGHT)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trace_sites_plates_and_log_joint(kind: str) -> None:
    net, weights, x, y = _case(kind)
    last = list(weights)[-1]
    hypers = group_hard.init_hypers({k: v.shape for k, v in weights.items()},
                                    groupings={last: ("in",)})
    generator = rng(1)
    for site in hypers["sites"]:  # distinct group variances, one pruned output unit
        for value in hypers["gamma_group"][site].values():
            value.uniform_(0.2, 2.0, generator=generator)
        hypers["gamma_group"][site][hypers["groupings"][site][0]][0] = 0.0
    hypers["gamma"] = group_hard.effective_gamma(hypers)
    values = {k: v * (hypers["gamma"][k] > 0) for k, v in weights.items()}
    trace = poutine.trace(poutine.condition(group_hard.model, data=values)).get_trace(
        net, x, y, hypers, NUM_DATA)
    trace.compute_log_prob()

    expected_prior = torch.zeros((), dtype=DT)
    for site, w in values.items():
        node = trace.nodes[site]
        frames = {f.name: (f.dim, f.size) for f in node["cond_indep_stack"]}
        assert frames == {f"{site}.out": (-2, w.shape[0]), f"{site}.in": (-1, w.shape[1])}
        assert node["fn"].event_shape == w.shape[2:]
        gamma = hypers["gamma"][site]
        alive = gamma > 0
        expected_prior += dist.Normal(0.0, gamma[alive].sqrt()).log_prob(w[alive]).sum()
    logits = group_hard.weight_forward(net)(values, x)
    log_lik = dist.Categorical(logits=logits).log_prob(y).sum() * NUM_DATA / len(x)
    torch.testing.assert_close(trace.log_prob_sum(), expected_prior + log_lik, **TIGHT)
    assert trace.nodes["obs"]["scale"] == pytest.approx(NUM_DATA / len(x))
    # the closed-form prior precision is what the engine takes by autograd
    terms = joint_terms(group_hard, net, [(x, y)], values, hypers, NUM_DATA)
    closed = group_hard.prior_precision(values, hypers)
    for site in values:
        torch.testing.assert_close(closed[site], terms.prior_precision[site], **TIGHT)
    # the classifier has one grouping: its weights take the input unit's variance
    in_var = hypers["gamma_group"][last]["in"]
    torch.testing.assert_close(hypers["gamma"][last], in_var.expand_as(weights[last]), **TIGHT)


def test_bad_group_specs_are_refused() -> None:
    net, weights, _, _ = _case("mlp")
    shapes = {k: v.shape for k, v in weights.items()}
    with pytest.raises(ValueError, match="not one of"):
        group_hard.init_hypers(shapes, groupings={"fc9.weight": ("in",)})
    with pytest.raises(ValueError, match="groupings"):
        group_hard.init_hypers(shapes, groupings={"fc1.weight": ("rows",)})
    with pytest.raises(ValueError, match="expected \\(out, in"):
        group_hard.init_hypers({"fc1.bias": (4,)})
    with pytest.raises(ValueError, match="no parameter 'fc4.weight'"):
        group_hard.check_weights(net, group_hard.init_hypers({"fc4.weight": (3, 4)}))
    with pytest.raises(ValueError, match="group spec"):
        group_hard.check_weights(net, group_hard.init_hypers({**shapes, "fc2.weight": (4, 5)}))
    group_hard.check_weights(net, group_hard.init_hypers(shapes))  # the matching spec passes


def test_linked_units_are_switched_off_together() -> None:
    """A conv with 2 filters feeding a linear layer over 2 x 3 flattened positions: filter j
    feeds columns 3j..3j+2."""
    shapes = {"conv.weight": (2, 1, 3, 3), "fc.weight": (4, 6)}
    hypers = group_hard.init_hypers(shapes, links=[("conv.weight", "fc.weight")])
    groups = hypers["gamma_group"]
    groups["conv.weight"]["out"] = torch.tensor([1.0, 0.0], dtype=DT)  # filter 1 off
    groups["fc.weight"]["in"] = torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0, 3.0], dtype=DT)
    linked = group_hard.link_units(groups, hypers)  # filter 0 loses every column it feeds
    assert linked["conv.weight"]["out"].tolist() == [0.0, 0.0]
    assert linked["fc.weight"]["in"].tolist() == [0.0] * 6
    groups["conv.weight"]["out"] = torch.tensor([1.0, 0.5], dtype=DT)
    linked = group_hard.link_units(groups, hypers)  # filter 1 keeps two of its columns
    assert linked["conv.weight"]["out"].tolist() == [0.0, 0.5]
    assert linked["fc.weight"]["in"].tolist() == [0.0, 0.0, 0.0, 2.0, 0.0, 3.0]
    with pytest.raises(ValueError, match="not a multiple"):
        group_hard.init_hypers({"a.weight": (4, 2), "b.weight": (3, 6)},
                               links=[("a.weight", "b.weight")])


def test_proximal_step_zeroes_weak_units_and_matches_the_penalty() -> None:
    w = torch.tensor([[3.0, 4.0, 0.0], [0.3, 0.4, 0.0]], dtype=DT)  # row norms 5 and 0.5
    hypers = group_hard.init_hypers({"fc.weight": w.shape}, lambda_weight=1.0,
                                    groupings={"fc.weight": ("out",)})
    out = group_hard.map_proximal({"fc.weight": w}, hypers, step=1.0)["fc.weight"]
    torch.testing.assert_close(out, torch.cat([w[:1] * 0.8, torch.zeros(1, 3, dtype=DT)]),
                               **TIGHT)
    penalty = group_hard.map_penalty({"fc.weight": w}, hypers)
    assert float(penalty) == pytest.approx(5.5)
    both = group_hard.init_hypers({"fc.weight": w.shape}, lambda_weight=0.1)
    # rows and columns in turn: the all-zero column stays zero, the rest shrink
    shrunk = group_hard.map_proximal({"fc.weight": w}, both, step=1.0)["fc.weight"]
    assert bool((shrunk[:, 2] == 0).all()) and bool((shrunk.abs() < w.abs() + 1e-15).all())


# ---------------------------------------------------------------------------------- closed form


def test_grouped_ard_reaches_the_closed_form_fixed_point() -> None:
    """Multi-output linear regression ``Y = X W^T + noise`` with an orthogonal design: the
    curvature of ``W[k, j]`` is ``||x_j||^2 / (N s^2)``, equal within a column, and the ARD fixed
    point of the column groups (``n = K`` weights each) is
    ``gamma_j = max(0, ||m_j||^2 / K - 1 / Ht_j)``."""
    g = rng(5)
    n, d, k, noise = 200, 6, 4, 0.5
    x = orthogonal_design(n, torch.linspace(8.0, 20.0, d), g)
    w_true = torch.randn(k, d, generator=g, dtype=DT)
    w_true[:, [1, 4]] = 0.0
    y = x @ w_true.T + noise * torch.randn(n, k, generator=g, dtype=DT)
    mode = (y.T @ x) / (x * x).sum(0)  # least squares, column by column: (K, D)

    def forward(sites, xb):
        return xb @ sites["fc.weight"].T

    batches = [(x, y)]
    curvature = diagonal_curvature(forward, {"fc.weight": mode}, batches,
                                   likelihood="gaussian", noise_std=noise)
    torch.testing.assert_close(curvature["fc.weight"],
                               ((x * x).sum(0) / (n * noise**2)).expand(k, d), **TIGHT)
    hypers = group_hard.init_hypers({"fc.weight": (k, d)}, lambda_weight=1.0,
                                    curvature_multiplier=n, groupings={"fc.weight": ("in",)})
    posterior = DiagonalLaplace(mean={"fc.weight": mode}, var={"fc.weight": mode * 0},
                                curvature=curvature, num_data=n)
    new = group_hard.update_hypers(posterior, hypers)

    ht = (x * x).sum(0) / noise**2
    expected = ((mode**2).sum(0) / k - 1 / ht).clamp_min(0)
    pruned = (expected == 0).nonzero().flatten().tolist()
    assert pruned == [1, 4]  # the zero columns
    torch.testing.assert_close(new["gamma_group"]["fc.weight"]["in"], expected,
                               rtol=1e-6, atol=1e-12)
    assert bool((new["gamma"]["fc.weight"][:, pruned] == 0).all())


def test_weight_grouping_is_the_per_weight_ard_fixed_point() -> None:
    """One variance per weight (grouping ``"weight"``) on the orthogonal design above: every
    weight is its own group of one, so the fixed point is MacKay's per-weight
    ``gamma = max(0, m^2 - 1 / Ht)``; a weight is pruned inside a column that stays."""
    g = rng(7)
    n, d, k, noise = 200, 5, 3, 0.5
    x = orthogonal_design(n, torch.linspace(8.0, 20.0, d), g)
    w_true = torch.randn(k, d, generator=g, dtype=DT)
    w_true[0, 1] = w_true[2, 3] = 0.0
    y = x @ w_true.T + noise * torch.randn(n, k, generator=g, dtype=DT)
    mode = (y.T @ x) / (x * x).sum(0)

    def forward(sites, xb):
        return xb @ sites["fc.weight"].T

    curvature = diagonal_curvature(forward, {"fc.weight": mode}, [(x, y)],
                                   likelihood="gaussian", noise_std=noise)
    hypers = group_hard.init_hypers({"fc.weight": (k, d)}, lambda_weight=1.0,
                                    curvature_multiplier=n, groupings={"fc.weight": ("weight",)})
    assert hypers["gamma_group"]["fc.weight"]["weight"].shape == (k * d,)
    posterior = DiagonalLaplace(mean={"fc.weight": mode}, var={"fc.weight": mode * 0},
                                curvature=curvature, num_data=n)
    new = group_hard.update_hypers(posterior, hypers)
    ht = ((x * x).sum(0) / noise**2).expand(k, d)
    expected = (mode**2 - 1 / ht).clamp_min(0)
    assert bool((expected[0, 1] == 0) & (expected[2, 3] == 0))
    assert int((expected > 0).sum()) >= k * d - 4  # the true weights mostly survive
    torch.testing.assert_close(new["gamma"]["fc.weight"], expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(new["gamma_group"]["fc.weight"]["weight"], expected.reshape(-1),
                               rtol=1e-6, atol=1e-12)


def test_weight_grouping_penalty_proximal_and_dead_rows() -> None:
    """The weight grouping's group lasso is a weighted L1 penalty, its proximal step the
    soft-threshold; a row whose weights all died is a dead unit even with a live row group."""
    w = torch.tensor([[3.0, -0.5, 0.0], [0.2, -0.1, 1.0]], dtype=DT)
    hypers = group_hard.init_hypers({"fc.weight": w.shape}, lambda_weight=0.5,
                                    groupings={"fc.weight": ("weight",)})
    assert float(group_hard.map_penalty({"fc.weight": w}, hypers)) == pytest.approx(
        0.5 * float(w.abs().sum()))
    out = group_hard.map_proximal({"fc.weight": w}, hypers, step=1.0)["fc.weight"]
    torch.testing.assert_close(out, w.sign() * (w.abs() - 0.5).clamp_min(0), **TIGHT)
    both = group_hard.init_hypers({"fc.weight": (2, 3)}, groupings={"fc.weight": ("out", "weight")})
    both["gamma_group"]["fc.weight"]["weight"] = torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=DT)
    both["gamma"] = group_hard.effective_gamma(both)
    torch.testing.assert_close(both["gamma"]["fc.weight"],
                               torch.tensor([[0.5, 0.5, 0], [0, 0, 0]], dtype=DT), **TIGHT)
    alive = group_hard.alive_units(both, "fc.weight")
    assert alive["out"].tolist() == [True, False]  # row 1 lost every weight
    assert alive["weight"].tolist() == [True, True, False, False, False, False]


def test_one_grouping_is_the_group_ard_fixed_point() -> None:
    g = rng(4)
    mode = torch.randn(5, 3, generator=g, dtype=DT)
    ht = torch.rand(5, 3, generator=g, dtype=DT) * 4 + 0.5
    rows = Grouping.along((5, 3), 0)
    ours = crossed_ard_fixed_point(mode, ht, torch.ones(5, 3, dtype=DT), [rows])
    theirs, shrunk = ard_fixed_point(mode, ht, torch.ones(5, 3, dtype=DT), rows.index, 5)
    torch.testing.assert_close(ours.gamma[0], theirs.gamma, **TIGHT)
    torch.testing.assert_close(ours.shrunk, shrunk, **TIGHT)


def test_crossed_fixed_point_satisfies_its_equations() -> None:
    """Rows and columns together: at the fixed point every group's variance is the norm of its
    shrunk weights over its omega, with omega from the effective (parallel) variances."""
    g = rng(5)
    mode = torch.randn(6, 4, generator=g, dtype=DT) * torch.tensor([1.0, 0.05, 1.5, 0.8], dtype=DT)
    ht = torch.rand(6, 4, generator=g, dtype=DT) * 10 + 5
    groupings = [Grouping.along((6, 4), 0), Grouping.along((6, 4), 1)]
    fit = crossed_ard_fixed_point(mode, ht, torch.full((6, 4), 0.5, dtype=DT), groupings,
                                  max_iter=5000, tol=1e-13)
    assert fit.rounds < 5000
    assert float(fit.gamma[1][1]) == 0.0  # the weak column is pruned, the others are not
    assert bool((fit.gamma[1][[0, 2, 3]] > 0).all())
    eff = effective_variance(fit.gamma, groupings)
    torch.testing.assert_close(eff, fit.effective, **TIGHT)
    alpha = torch.where(eff > 0, ht / (1 + eff * ht), 0.0)
    for grouping, gamma, omega in zip(groupings, fit.gamma, fit.omega, strict=True):
        sums = torch.zeros(grouping.size, dtype=DT).index_add(0, grouping.index.reshape(-1),
                                                               alpha.reshape(-1))
        torch.testing.assert_close(omega, sums.sqrt(), rtol=1e-7, atol=1e-10)
        norms = group_norms(fit.shrunk, grouping)
        live = omega > 0
        torch.testing.assert_close(gamma[live], norms[live] / omega[live], rtol=1e-7, atol=1e-10)


def test_priced_fixed_point_satisfies_its_equations() -> None:
    """With prices, every grouping's omega is its price times sqrt(sum alpha) and its variances
    the shrunk norms over omega; a price above 1 prunes at least the columns price 1 does."""
    g = rng(5)
    mode = torch.randn(6, 4, generator=g, dtype=DT) * torch.tensor([1.0, 0.05, 1.5, 0.3], dtype=DT)
    ht = torch.rand(6, 4, generator=g, dtype=DT) * 10 + 5
    groupings = [Grouping.along((6, 4), 0), Grouping.along((6, 4), 1)]
    start = torch.full((6, 4), 0.5, dtype=DT)
    plain = crossed_ard_fixed_point(mode, ht, start, groupings, max_iter=5000, tol=1e-13)
    fit = crossed_ard_fixed_point(mode, ht, start, groupings, max_iter=5000, tol=1e-13,
                                  prices=[1.0, 3.0])
    assert fit.rounds < 5000
    alpha = torch.where(fit.effective > 0, ht / (1 + fit.effective * ht), 0.0)
    for grouping, gamma, omega, price in zip(groupings, fit.gamma, fit.omega, [1.0, 3.0],
                                             strict=True):
        sums = torch.zeros(grouping.size, dtype=DT).index_add(0, grouping.index.reshape(-1),
                                                               alpha.reshape(-1))
        torch.testing.assert_close(omega, price * sums.sqrt(), rtol=1e-7, atol=1e-10)
        live = omega > 0
        norms = group_norms(fit.shrunk, grouping)
        torch.testing.assert_close(gamma[live], norms[live] / omega[live], rtol=1e-7, atol=1e-10)
    pruned_plain = set((plain.gamma[1] == 0).nonzero().flatten().tolist())
    pruned_priced = set((fit.gamma[1] == 0).nonzero().flatten().tolist())
    assert pruned_plain < pruned_priced  # strictly more columns go at price 3


def test_a_vanishing_price_leaves_the_other_grouping_alone() -> None:
    """Columns priced at 1e-9: the rows' fit is the rows-only group ARD fixed point."""
    g = rng(6)
    mode = torch.randn(5, 3, generator=g, dtype=DT) * torch.tensor([1.0, 0.02, 0.7], dtype=DT)
    ht = torch.rand(5, 3, generator=g, dtype=DT) * 4 + 0.5
    rows, cols = Grouping.along((5, 3), 0), Grouping.along((5, 3), 1)
    start = torch.ones(5, 3, dtype=DT)
    alone = crossed_ard_fixed_point(mode, ht, start, [rows], max_iter=5000, tol=1e-13)
    both = crossed_ard_fixed_point(mode, ht, start, [rows, cols], max_iter=5000, tol=1e-13,
                                   prices=[1.0, 1e-9])
    torch.testing.assert_close(both.gamma[0], alone.gamma[0], rtol=1e-6, atol=1e-9)
    assert bool((both.gamma[1] > 0).all())  # no column pruned at a vanishing price
    with pytest.raises(ValueError, match="prices"):
        crossed_ard_fixed_point(mode, ht, start, [rows, cols], prices=[1.0, 0.0])
    with pytest.raises(ValueError, match="prices"):
        crossed_ard_fixed_point(mode, ht, start, [rows, cols], prices=[1.0])


def test_group_prices_in_the_prior() -> None:
    shapes = {"fc1.weight": (4, 6), "fc2.weight": (3, 4)}
    hypers = group_hard.init_hypers(shapes, prices={"fc1.weight": {"in": 0.25}})
    assert hypers["prices"] == {"fc1.weight": {"out": 1.0, "in": 0.25},
                                "fc2.weight": {"out": 1.0, "in": 1.0}}
    torch.testing.assert_close(hypers["omega"]["fc1.weight"]["in"],
                               torch.full((6,), 0.25, dtype=DT))
    with pytest.raises(ValueError, match="positive"):
        group_hard.init_hypers(shapes, prices={"fc1.weight": {"in": -1.0}})
    with pytest.raises(ValueError, match="does not have"):
        group_hard.init_hypers(shapes, groupings={"fc1.weight": ("out",)},
                               prices={"fc1.weight": {"in": 0.5}})


# ---------------------------------------------------------------------------------- curvature


@pytest.mark.parametrize("backend", ["ggn", "ggn_lean"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_curvature_per_weight_matches_brute_force(kind: str, backend: str) -> None:
    net, weights, x, y = _case(kind)
    forward = group_hard.weight_forward(net)
    got = diagonal_curvature(forward, weights, [(x, y)], backend=backend, module=net)
    expected = brute_ggn(forward, weights, x, likelihood="categorical")
    for site in weights:
        torch.testing.assert_close(got[site], expected[site], rtol=1e-9, atol=1e-12)
        # summed over a unit's weights: the curvature of the unit's group
        rows = Grouping.along(weights[site].shape, 0)
        sums = torch.zeros(rows.size, dtype=DT).index_add(0, rows.index.reshape(-1),
                                                          got[site].reshape(-1))
        torch.testing.assert_close(sums, expected[site].flatten(1).sum(1), rtol=1e-9,
                                   atol=1e-12)


def test_layerwise_curvature_is_exact_for_a_scalar_gaussian_mlp() -> None:
    """With one output and a Gaussian likelihood no off-diagonal term is dropped."""
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 1)).to(DT)
    weights = _weights(net)
    x, y = torch.randn(9, 4, dtype=DT), torch.randn(9, 1, dtype=DT)
    forward = group_hard.weight_forward(net)
    got = diagonal_curvature(forward, weights, [(x, y)], likelihood="gaussian",
                             backend="layerwise", module=net)
    expected = brute_ggn(forward, weights, x, likelihood="gaussian")
    for site in weights:
        torch.testing.assert_close(got[site], expected[site], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------- engine


def test_type2_loop_prunes_whole_units_and_keeps_the_informative_inputs() -> None:
    """The unchanged engine over weight sites, linked layers: the labels depend on inputs 0 and
    1 only; ARD keeps exactly those columns of ``fc1``, and every pruned weight lies in a pruned
    row or column (a unit off in one layer is off in the next)."""
    torch.manual_seed(11)
    net = TinyMLP().to(DT)
    x = torch.randn(64, 5, dtype=DT)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    for _ in range(300):  # a trained network: ARD prunes what the fit does not use
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    weights = _weights(net)
    hypers = group_hard.init_hypers(
        {k: v.shape for k, v in weights.items()}, lambda_weight=0.01,
        groupings={"fc3.weight": ("in",)},
        links=[("fc1.weight", "fc2.weight"), ("fc2.weight", "fc3.weight")],
    )
    for p in (net.fc1.weight, net.fc2.weight, net.fc3.weight):
        p.requires_grad_(False)  # the sites stand in for them
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    cfg = Type2Config(t_max=2, epochs_per_iter=5, lr=0.1, backend="ggn", progress=False,
                      threshold=1e-12, curvature_batches=2)
    state = run_type2(group_hard, net, weights, hypers, batches, batches, 64, config=cfg,
                      forward=group_hard.weight_forward(net))
    assert len(state.records) == 2
    assert all(math.isfinite(r["log_evidence"]) for r in state.records)
    alive = {site: group_hard.alive_units(state.hypers, site) for site in state.masks}
    assert alive["fc1.weight"]["in"].tolist() == [True, True, False, False, False]
    for site, mask in state.masks.items():
        expected = alive[site]["in"][None, :].expand_as(mask)
        if "out" in alive[site]:
            expected = expected & alive[site]["out"][:, None]
        assert torch.equal(mask, expected), site
        assert bool((state.sites[site][~mask] == 0).all())
    for a, b in (("fc1.weight", "fc2.weight"), ("fc2.weight", "fc3.weight")):
        assert torch.equal(alive[a]["out"], alive[b]["in"])
    assert 0 < int(alive["fc2.weight"]["out"].sum()) < 4
