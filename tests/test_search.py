"""End-to-end BayesNAS search on digits at a tiny size: run folder, determinism, resume."""

import csv

import pytest
import torch
from conftest import TINY_SEARCH

from pyronas.arviz_export import posterior_draws
from pyronas.genotype import load_genotype, validate
from pyronas.runs import RunFolderError
from pyronas.search import resolve_search_config, run_search
from pyronas.search_posterior import SearchPosterior
from pyronas.space import SITES

TINY = TINY_SEARCH


def _search(tmp_path, name, **extra):
    cfg = resolve_search_config(None, {**TINY, **extra, "out": str(tmp_path / name)})
    return run_search(cfg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return _search(tmp_path_factory.mktemp("search"), "run")


def test_run_folder_holds_every_artefact(tiny_run):
    out = tiny_run.out_dir
    for name in (
        "config.yaml",
        "metrics.csv",
        "posterior.pt",
        "genotype.json",
        "checkpoint.pt",
        "posterior.nc",
        "cell_normal.png",
        "cell_reduce.png",
        "genotype_top2.json",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(float(r["log_evidence"]) < 0 for r in rows)
    genotype = load_genotype(out / "genotype.json")
    validate(genotype)
    assert genotype.space == "bayesnas8"


def test_posterior_file_follows_the_contract(tiny_run):
    post = torch.load(tiny_run.out_dir / "posterior.pt", weights_only=False)
    assert post["format"] == "pyronas-posterior/1"
    assert post["mean"]["op_switch"].shape == (2, 8, 7)
    assert post["var"]["edge_switch"].shape == (2, 8)
    assert (post["var"]["op_switch"] > 0).all()
    assert (post["curvature"]["op_switch"] >= 0).all()
    assert len(post["history"]) == 2
    # pruned switches are exactly zero
    dead = ~post["alive"]["op_switch"]
    assert (post["mean"]["op_switch"][dead] == 0).all()


def test_same_seed_gives_the_same_genotype(tiny_run, tmp_path):
    again = _search(tmp_path, "again")
    assert again.genotype == tiny_run.genotype
    first = torch.load(tiny_run.out_dir / "posterior.pt", weights_only=False)
    second = torch.load(again.out_dir / "posterior.pt", weights_only=False)
    torch.testing.assert_close(first["mean"]["op_switch"], second["mean"]["op_switch"])


def test_existing_run_is_not_overwritten(tiny_run):
    cfg = resolve_search_config(None, {**TINY, "out": str(tiny_run.out_dir)})
    with pytest.raises(RunFolderError, match="bayesnas search run, finished.*--resume.*"
                       "--overwrite"):
        run_search(cfg)


def test_resume_continues_after_the_last_iteration(tmp_path):
    _search(tmp_path, "r", t_max=1)
    result = _search(tmp_path, "r", t_max=2, resume=True)
    rows = list(csv.DictReader((result.out_dir / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert [r["iteration"] for r in result.records] == [1, 2]


def test_resume_refuses_a_different_config(tmp_path):
    _search(tmp_path, "r", t_max=1)
    with pytest.raises(RunFolderError, match="other settings.*lambda_op"):
        _search(tmp_path, "r", t_max=2, resume=True, lambda_op=0.5)


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lambda_ege: 0.01\n")
    with pytest.raises(ValueError, match="lambda_ege.*lambda_edge"):
        resolve_search_config(path, {})


@pytest.mark.parametrize("prior", ["ard", "laplace", "horseshoe"])
def test_every_prior_runs_a_search(tmp_path, prior):
    result = _search(tmp_path, prior, prior=prior, t_max=1, train_size=200)
    assert (result.out_dir / "genotype.json").exists()


def test_untied_switches_search_and_prune_per_cell_type(tmp_path):
    result = _search(tmp_path, "untied", tied=False, t_max=1, train_size=200)
    post = torch.load(result.out_dir / "posterior.pt", weights_only=False)
    cells = len(post["cell_type_index"])
    assert post["mean"]["op_switch"].shape == (cells, 8, 7)
    assert post["gamma"]["op_switch"].shape == (2, 8, 7)
    validate(result.genotype)


def test_site_gamma_broadcasts_group_variances_to_cells():
    from pyronas.models import load_prior
    from pyronas.space import get_space

    prior = load_prior("hard")
    index = torch.tensor([0, 1, 0, 1, 0])
    hypers = prior.init_hypers(get_space("bayesnas8"), cell_type_index=index)
    hypers["gamma"]["op_switch"][1] = 0.5
    gamma = prior.site_gamma(hypers, "op_switch")
    assert gamma.shape == (5, 8, 7)
    assert (gamma[index == 1] == 0.5).all() and (gamma[index == 0] == 1.0).all()


def test_skipping_pruned_ops_gives_the_same_search(tmp_path, monkeypatch):
    # a strong group lasso prunes most ops at the first update, so the second MAP epoch skips them
    from pyronas.supernet import SuperNet

    settings = {"lambda_op": 0.01, "lambda_edge": 0.01, "train_size": 200}
    set_alive = SuperNet.set_alive
    masks = []

    def spy(self, op_alive):
        masks.append(op_alive)
        set_alive(self, op_alive)

    monkeypatch.setattr(SuperNet, "set_alive", spy)
    skipping = _search(tmp_path, "skip", **settings)
    assert any(m is not None and not bool(m.all()) for m in masks)  # some ops were skipped
    monkeypatch.setattr(SuperNet, "set_alive", lambda self, op_alive: set_alive(self, None))
    computing = _search(tmp_path, "all", **settings)

    assert skipping.genotype == computing.genotype
    for name, mask in skipping.state.masks.items():
        assert torch.equal(mask, computing.state.masks[name])
        torch.testing.assert_close(skipping.state.sites[name], computing.state.sites[name])
    # the weights of skipped ops get no weight decay any more, which moves the curvature of
    # the pruned switches (and so the evidence) a little; the live switches are unaffected
    for a, b in zip(skipping.records, computing.records, strict=True):
        assert a["log_evidence"] == pytest.approx(b["log_evidence"], rel=1e-4)


def test_a_search_stopped_after_its_last_checkpoint_can_be_finished(tmp_path):
    """Dies after the last iteration's checkpoint but before genotype.json: --resume ends it."""
    first = _search(tmp_path, "r", t_max=1)
    for name in ("genotype.json", "posterior.pt", "metrics.json", "posterior.nc"):
        (first.out_dir / name).unlink()
    again = _search(tmp_path, "r", t_max=1, resume=True)
    assert again.genotype == first.genotype
    assert (again.out_dir / "genotype.json").exists() and (again.out_dir / "posterior.pt").exists()


@pytest.mark.parametrize("laplace", ["full", "block"])
def test_full_and_block_laplace_run_a_search(tmp_path, laplace):
    result = _search(tmp_path, laplace, laplace=laplace, t_max=2, train_size=200,
                     lambda_edge=1e-4, lambda_op=1e-4)
    validate(result.genotype)
    rows = list(csv.DictReader((result.out_dir / "metrics.csv").open()))
    assert len(rows) == 2
    assert all(torch.isfinite(torch.tensor(float(r["log_evidence"]))) for r in rows)
    config = (result.out_dir / "config.yaml").read_text()
    assert f"laplace: {laplace}" in config
    # posterior.pt keeps the joint precision; its marginals are the stored variances, and the
    # ArviZ draws come from the joint Gaussian (correlated)
    posterior = SearchPosterior.load(result.out_dir / "posterior.pt")
    tril = posterior.precision_tril.double()
    size = sum(posterior.mean[s].numel() for s in SITES)
    assert tril.shape == (size, size)
    marginal = torch.cholesky_inverse(tril).diagonal()
    stored = torch.cat([posterior.var[s].double().flatten() for s in SITES])
    assert torch.allclose(marginal, stored, rtol=1e-4)
    draws = posterior_draws(posterior, num_chains=2, num_draws=2)
    assert draws["op_switch"].shape == (2, 2, *posterior.mean["op_switch"].shape)
