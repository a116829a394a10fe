"""ArviZ export of a search posterior: dims, coords, moments, NetCDF, log likelihood."""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import torch
import yaml

from pyronas.arviz_export import (
    gaussian_prior_draws,
    get_group,
    group_names,
    heldout_log_likelihood,
    load_arviz,
    posterior_draws,
    sample_prior,
    save_arviz,
    to_arviz,
)
from pyronas.genotype import derive, save_genotype
from pyronas.space import get_space

SPACE = get_space("bayesnas8")


def make_posterior(tied: bool = True, iterations: int = 3, seed: int = 0) -> dict:
    """A ``posterior.pt`` dict with the contract's shapes for bayesnas8 and known moments."""
    gen = torch.Generator().manual_seed(seed)
    cell_type_index = torch.tensor([0, 1, 0, 1, 0])
    lead = len(SPACE.cell_types) if tied else len(cell_type_index)
    edge_shape, op_shape = SPACE.switch_shapes(None if tied else lead)
    type_shapes = dict(zip(("edge_switch", "op_switch"), SPACE.switch_shapes(), strict=True))
    shapes = {"edge_switch": edge_shape, "op_switch": op_shape}
    mean = {s: torch.randn(shape, generator=gen, dtype=torch.float64)
            for s, shape in shapes.items()}
    var = {s: 0.01 + 0.2 * torch.rand(shape, generator=gen, dtype=torch.float64)
           for s, shape in shapes.items()}
    curvature = {s: 1.0 / v for s, v in var.items()}
    gamma = {s: torch.rand(shape, generator=gen, dtype=torch.float64)
             for s, shape in type_shapes.items()}
    omega = {s: 1.0 + torch.rand(shape, generator=gen, dtype=torch.float64)
             for s, shape in type_shapes.items()}
    alive = {s: torch.ones(shape, dtype=torch.bool) for s, shape in shapes.items()}
    alive["op_switch"][0, 0, :3] = False  # three pruned ops
    alive["edge_switch"][0, 7] = False  # one pruned edge
    for s in shapes:
        mean[s] = torch.where(alive[s], mean[s], torch.zeros_like(mean[s]))
    history = [
        {
            "iteration": i,
            "log_evidence": -100.0 + 10.0 * i,
            "gamma": {s: g * (0.5 ** i) for s, g in gamma.items()},
            "mean": {s: m.clone() for s, m in mean.items()},
        }
        for i in range(iterations)
    ]
    return {
        "format": "pyronas-posterior/1",
        "space": "bayesnas8", "prior": "hard", "tied": tied,
        "cell_type_index": cell_type_index,
        "num_data": 1000,
        "mean": mean, "var": var, "curvature": curvature,
        "gamma": gamma, "omega": omega, "alive": alive,
        "history": history,
    }


def write_run_folder(path: Path, tied: bool = True, seed: int = 0, genotype: bool = True) -> Path:
    """A run folder as the search writes it (posterior.pt, config.yaml, metrics.csv, ...)."""
    path.mkdir(parents=True, exist_ok=True)
    post = make_posterior(tied=tied, seed=seed)
    torch.save(post, path / "posterior.pt")
    (path / "config.yaml").write_text(yaml.safe_dump({"prior": "hard", "space": "bayesnas8",
                                                       "seed": seed}))
    lines = ["iteration,log_evidence,train_loss,val_acc"]
    lines += [f"{h['iteration']},{h['log_evidence']},1.0,0.5" for h in post["history"]]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    if genotype and tied:
        save_genotype(derive(SPACE, post["alive"]["edge_switch"], post["alive"]["op_switch"]),
                      path / "genotype.json")
    return path


def test_dims_and_coords_tied() -> None:
    post = make_posterior()
    idata = to_arviz(post, SPACE, num_chains=2, num_draws=50)
    posterior = get_group(idata, "posterior")
    assert posterior["op_switch"].dims == ("chain", "draw", "cell_type", "edge", "op")
    assert posterior["edge_switch"].dims == ("chain", "draw", "cell_type", "edge")
    assert posterior["op_switch"].shape == (2, 50, 2, 8, 7)
    assert list(posterior["op"].values) == list(SPACE.ops)
    assert list(posterior["cell_type"].values) == ["normal", "reduce"]
    assert list(posterior["edge"].values) == [f"e{i}" for i in range(8)]
    const = get_group(idata, "constant_data")
    assert const["op_switch_gamma"].dims == ("cell_type", "edge", "op")
    assert list(const["edge_name"].sel(cell_type="reduce").values) == SPACE.edge_names("reduce")
    np.testing.assert_allclose(const["log_evidence"].values, [-100.0, -90.0, -80.0])
    assert const["op_switch_gamma_history"].dims == ("iteration", "cell_type", "edge", "op")
    np.testing.assert_allclose(
        const["op_switch_gamma_history"].sel(iteration=2).values,
        post["gamma"]["op_switch"].numpy() * 0.25,
    )
    assert {"posterior", "prior", "constant_data"} <= set(group_names(idata))
    assert "log_likelihood" not in group_names(idata)


def test_dims_untied() -> None:
    idata = to_arviz(make_posterior(tied=False), SPACE, num_chains=1, num_draws=10)
    dims = get_group(idata, "posterior")["op_switch"].dims
    assert dims == ("chain", "draw", "cell", "edge", "op")
    np.testing.assert_array_equal(
        get_group(idata, "constant_data")["cell_type_index"].values, [0, 1, 0, 1, 0]
    )


def test_summary_matches_laplace_moments_within_mc_error() -> None:
    post = make_posterior()
    n = 2 * 1000
    idata = to_arviz(post, SPACE, num_chains=2, num_draws=1000, seed=3)
    summary = az.summary(idata, var_names=["op_switch"], kind="stats", round_to="none")
    mean = post["mean"]["op_switch"].numpy().ravel()
    sd = post["var"]["op_switch"].sqrt().numpy().ravel()
    alive = post["alive"]["op_switch"].numpy().ravel()
    got_mean = summary["mean"].to_numpy()
    got_sd = summary["sd"].to_numpy()
    # az.summary rows follow C order of (cell_type, edge, op)
    assert np.all(np.abs(got_mean - mean)[alive] < 4.5 * sd[alive] / np.sqrt(n))
    assert np.all(np.abs(got_sd - sd)[alive] < 4.5 * sd[alive] / np.sqrt(2 * (n - 1)))
    # pruned switches are exactly zero in every draw
    assert np.all(got_mean[~alive] == 0) and np.all(got_sd[~alive] == 0)


def test_joint_draws_carry_the_full_posterior_covariance() -> None:
    """With a precision_tril the draws follow N(mean, (L L^T)^-1): sample covariance within
    Monte Carlo error of the exact one, correlations included; pruned switches stay 0."""
    post = make_posterior()
    size = sum(post["mean"][s].numel() for s in ("edge_switch", "op_switch"))
    gen = torch.Generator().manual_seed(1)
    factor = torch.randn(size, 2, generator=gen, dtype=torch.float64)
    cov = factor @ factor.T + torch.diag(0.1 + torch.rand(size, generator=gen,
                                                          dtype=torch.float64))
    post["precision_tril"] = torch.linalg.cholesky(torch.linalg.inv(cov))
    draws = posterior_draws(post, num_chains=4, num_draws=5000, seed=2)
    flat = torch.cat([draws[s].reshape(20000, -1) for s in ("edge_switch", "op_switch")], 1)
    alive = torch.cat([post["alive"][s].flatten() for s in ("edge_switch", "op_switch")])
    assert torch.all(flat[:, ~alive] == 0)
    live = flat[:, alive]
    mean = torch.cat([post["mean"][s].flatten() for s in ("edge_switch", "op_switch")])[alive]
    sd = cov.diagonal()[alive].sqrt()
    assert torch.all((live.mean(0) - mean).abs() < 5 * sd / 20000**0.5)
    got = torch.cov(live.T)
    want = cov[alive][:, alive]
    scale = torch.outer(sd, sd)
    # entries of a sample covariance have sd <= sqrt(2) sd_i sd_j / sqrt(n)
    assert torch.all((got - want).abs() < 6 * 2**0.5 * scale / 20000**0.5)
    corr = want / scale
    off = ~torch.eye(len(sd), dtype=torch.bool)
    assert corr[off].abs().max() > 0.3  # the check has correlations to find


def test_posterior_draws_deterministic_and_zero_when_pruned() -> None:
    post = make_posterior()
    a = posterior_draws(post, 2, 5, seed=7)
    b = posterior_draws(post, 2, 5, seed=7)
    c = posterior_draws(post, 2, 5, seed=8)
    assert torch.equal(a["op_switch"], b["op_switch"])
    assert not torch.equal(a["op_switch"], c["op_switch"])
    assert torch.all(a["edge_switch"][:, :, 0, 7] == 0)


def test_gaussian_prior_matches_model_file_prior() -> None:
    """Default N(0, gamma) prior draws agree with tracing the hard model's prior."""
    from pyronas.models import load_prior

    hard = load_prior("hard")
    hypers = hard.init_hypers(SPACE)
    gen = torch.Generator().manual_seed(1)
    gamma = {s: 0.1 + torch.rand(g.shape, generator=gen, dtype=torch.float64)
             for s, g in hypers["gamma"].items()}
    hypers["gamma"] = gamma
    from_model = sample_prior(hard, hypers, num_chains=2, num_draws=400, seed=0)
    post = make_posterior()
    post["gamma"] = gamma
    post["alive"] = {s: torch.ones_like(a) for s, a in post["alive"].items()}
    gaussian = gaussian_prior_draws(post, 2, 400, seed=0)
    for site in gamma:
        assert from_model[site].shape == gaussian[site].shape
        var_model = from_model[site].reshape(800, -1).var(0)
        var_gauss = gaussian[site].reshape(800, -1).var(0)
        expected = gamma[site].reshape(-1)
        # sample variance of 800 normals: relative sd sqrt(2/799) ~ 0.05
        assert torch.all((var_model / expected - 1).abs() < 0.3)
        assert torch.all((var_gauss / expected - 1).abs() < 0.3)
    idata = to_arviz(post, SPACE, 2, 400, prior_draws=from_model)
    assert get_group(idata, "prior").attrs["prior_source"] == "model_file"


def test_netcdf_round_trip(tmp_path: Path) -> None:
    post = make_posterior()
    ll = np.random.default_rng(0).normal(size=(2, 30, 17))
    idata = to_arviz(post, SPACE, num_chains=2, num_draws=30, log_likelihood=ll)
    path = save_arviz(idata, tmp_path / "posterior.nc")
    back = load_arviz(path)
    for group in ("posterior", "prior", "log_likelihood", "constant_data"):
        a, b = get_group(idata, group), get_group(back, group)
        assert set(a.data_vars) == set(b.data_vars), group
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            np.testing.assert_array_equal(a[name].values, b[name].values)
    assert list(get_group(back, "posterior")["op"].values) == list(SPACE.ops)
    assert get_group(back, "posterior").attrs["space"] == "bayesnas8"


def test_log_likelihood_shapes_and_values() -> None:
    """The held-out log likelihood uses the same draws as the posterior group."""

    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, edge_switch, op_switch):
            # logits of 3 classes from the switch sums: a closed form to check against
            base = edge_switch.sum() * x[:, :1] + op_switch.sum()
            return torch.cat([base, 2 * base, torch.zeros_like(base)], dim=1)

    post = make_posterior()
    x = torch.randn(10, 2, dtype=torch.float64)
    y = torch.arange(10) % 3
    loader = [(x[:6], y[:6]), (x[6:], y[6:])]
    net = Linear().double()
    ll = heldout_log_likelihood(net, post, loader, num_chains=2, num_draws=4, seed=5)
    assert ll.shape == (2, 4, 10)
    draws = posterior_draws(post, 2, 4, seed=5)
    c, d = 1, 2
    logits = net(x, draws["edge_switch"][c, d], draws["op_switch"][c, d])
    expected = torch.log_softmax(logits, 1)[torch.arange(10), y]
    np.testing.assert_allclose(ll[c, d], expected.numpy(), rtol=1e-9, atol=1e-12)
    idata = to_arviz(post, SPACE, 2, 4, seed=5, log_likelihood=ll)
    assert get_group(idata, "log_likelihood")["obs"].dims == ("chain", "draw", "obs_id")
    with pytest.raises(ValueError, match="log_likelihood must have shape"):
        to_arviz(post, SPACE, 2, 5, log_likelihood=ll)


def test_loo_on_log_likelihood() -> None:
    rng = np.random.default_rng(0)
    ll = rng.normal(-1.0, 0.1, size=(2, 200, 40))
    idata = to_arviz(make_posterior(), SPACE, 2, 200, log_likelihood=ll)
    loo = az.loo(idata)
    # with tiny spread across draws, elpd_loo is close to the sum of mean log likelihoods
    assert abs(float(loo["elpd_loo"]) - ll.mean(axis=(0, 1)).sum()) < 1.0


def test_bad_posterior_is_named() -> None:
    post = make_posterior()
    with pytest.raises(ValueError, match="format"):
        to_arviz({**post, "format": "other"}, SPACE)
    bad = {**post, "mean": {**post["mean"], "op_switch": torch.zeros(2, 8, 5)}}
    with pytest.raises(ValueError, match="op_switch"):
        to_arviz(bad, SPACE)
    with pytest.raises(ValueError, match="space"):
        to_arviz(post, get_space("darts"))


def test_fixture_writes_valid_json(tmp_path: Path) -> None:
    run = write_run_folder(tmp_path / "run")
    assert json.loads((run / "genotype.json").read_text())["space"] == "bayesnas8"


def test_edges_are_named_when_every_cell_type_has_the_same_edges() -> None:
    from pyronas.space import get_space

    darts = get_space("darts")
    assert darts.coords()["edge"] == darts.edge_names("normal") == darts.edge_names("reduce")
    assert darts.coords()["edge"][:2] == ["c_{k-2}->n0", "c_{k-1}->n0"]
    # the authors' 8-edge cells differ between normal and reduce: indices, names per type
    assert SPACE.edge_names("normal") != SPACE.edge_names("reduce")
    assert SPACE.coords()["edge"] == [f"e{i}" for i in range(8)]
