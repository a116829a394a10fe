"""Properties of the prior model files: what their sample statements and options mean."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch
from conftest import TINY_SEARCH
from pyro import poutine
from torch import nn

import pyronas.models as models
from pyronas.inference.type2 import Type2Config, Type2State, map_objective, prune
from pyronas.models import ard, hard, laplace
from pyronas.models.common import SITES
from pyronas.space import get_space

F64 = torch.float64
REPO = Path(__file__).resolve().parents[1]
NUM_DATA = 40
BATCH = 8


class SumNet(nn.Module):
    """Stand-in supernet (float64): logits depend on every switch."""

    def __init__(self, space, tied: bool = True, cell_types=(0, 0, 0)) -> None:
        super().__init__()
        self.tied = tied
        self.cell_type_index = torch.tensor(cell_types) % len(space.cell_types)
        self.linear = nn.Linear(4, 3).double()

    def forward(self, x, edge_switch, op_switch):
        return self.linear(x) * (edge_switch.unsqueeze(-1) * op_switch).mean()


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 4, generator=gen, dtype=F64), torch.randint(0, 3, (BATCH,),
                                                                          generator=gen)


def _switches(space, seed: int = 1, lead=None):
    gen = torch.Generator().manual_seed(seed)
    edge_shape, op_shape = space.switch_shapes(lead)
    return {"edge_switch": torch.randn(edge_shape, generator=gen, dtype=F64),
            "op_switch": torch.randn(op_shape, generator=gen, dtype=F64)}


def _trace(prior, net, hypers, switches=None):
    fn = prior.model if switches is None else poutine.condition(prior.model, data=switches)
    trace = poutine.trace(fn).get_trace(net, *_batch(), hypers, NUM_DATA)
    trace.compute_log_prob()
    return trace


def _edited_copy(tmp_path: Path, old: str, new: str) -> Path:
    source = (REPO / "models" / "laplace.py").read_text()
    assert source.count(old) == 1, old
    path = tmp_path / "edited_prior.py"
    path.write_text(source.replace(old, new))
    return path


# ----------------------------------------------------------------------------- editing a prior

EDGE_LAPLACE = 'dist.Laplace(0.0, per_switch(b["edge_switch"], net, x))'
EDGE_NORMAL = 'dist.Normal(0.0, per_switch(b["edge_switch"], net, x))'


def test_an_edited_sample_statement_changes_the_traced_model(tmp_path):
    edited = models.load_prior(_edited_copy(tmp_path, EDGE_LAPLACE, EDGE_NORMAL))
    space = get_space("nb201")
    net = SumNet(space)
    hypers = edited.init_hypers(space, scale_edge=0.3)
    switches = _switches(space)
    trace = _trace(edited, net, hypers, switches)
    edge = trace.nodes["edge_switch"]
    assert isinstance(edge["fn"], dist.Normal)
    b = torch.tensor(0.3, dtype=F64)
    expected = dist.Normal(0.0, b).log_prob(switches["edge_switch"]).sum()
    assert edge["log_prob_sum"].item() == pytest.approx(expected.item(), rel=1e-12)
    original = _trace(laplace, net, laplace.init_hypers(space, scale_edge=0.3), switches)
    assert isinstance(original.nodes["edge_switch"]["fn"], dist.Laplace)
    expected = dist.Laplace(0.0, b).log_prob(switches["edge_switch"]).sum()
    assert original.nodes["edge_switch"]["log_prob_sum"].item() == pytest.approx(expected.item())
    # the op site is untouched by the edit
    assert trace.nodes["op_switch"]["log_prob_sum"].item() == pytest.approx(
        original.nodes["op_switch"]["log_prob_sum"].item(), rel=1e-12)


def test_an_edited_sample_statement_changes_the_search(tmp_path, monkeypatch):
    import pyronas.diagram
    from pyronas.search import resolve_search_config, run_search

    monkeypatch.setattr(pyronas.diagram, "draw_genotype", lambda *args, **kwargs: None)

    tiny = {**TINY_SEARCH, "train_size": 60, "batch_size": 30, "t_max": 1, "layers": 2,
            "channels": 2, "posterior_draws": 2, "z_select": 0.0}
    unchanged = tmp_path / "unchanged" / "laplace_copy.py"
    unchanged.parent.mkdir()
    unchanged.write_text((REPO / "models" / "laplace.py").read_text())
    edited = _edited_copy(tmp_path, EDGE_LAPLACE, EDGE_NORMAL)
    objectives = {}
    for name, path in (("unchanged", unchanged), ("edited", edited)):
        cfg = resolve_search_config(None, {**tiny, "prior": str(path),
                                           "out": str(tmp_path / f"run_{name}")})
        objectives[name] = run_search(cfg).records[0]["objective"]
    # N(0, b) prices a switch near 1 at s^2 / (2 b^2) = 200 nats, Laplace(0, b) at |s| / b = 20
    assert objectives["edited"] > objectives["unchanged"] + 1.0


# ----------------------------------------------------------------------------- lambda limits


def _diagonal_posterior(space, lead=None, seed: int = 2):
    gen = torch.Generator().manual_seed(seed)
    edge_shape, op_shape = space.switch_shapes(lead)
    mean = {"edge_switch": 0.5 + torch.rand(edge_shape, generator=gen, dtype=F64),
            "op_switch": 0.5 + torch.rand(op_shape, generator=gen, dtype=F64)}
    curvature = {k: 0.1 + torch.rand(v.shape, generator=gen, dtype=F64) for k, v in mean.items()}
    from types import SimpleNamespace

    return SimpleNamespace(mean=mean, curvature=curvature)


def _kept_after_one_update(prior, lam: float, tied: bool) -> dict[str, torch.Tensor]:
    """Masks of the engine's pruning rule (gamma < threshold) after one type-II update."""
    space = get_space("nb201")
    index = None if tied else torch.tensor([0, 0, 0])
    posterior = _diagonal_posterior(space, lead=None if tied else 3)
    hypers = prior.init_hypers(space, lambda_edge=lam, lambda_op=lam, cell_type_index=index)
    module = models.load_prior(prior.__name__.rsplit(".", 1)[-1])
    state = Type2State(
        sites={k: v.clone() for k, v in posterior.mean.items()},
        hypers=module.update_hypers(posterior, hypers),
        masks={k: torch.ones_like(v, dtype=torch.bool) for k, v in posterior.mean.items()},
    )
    prune(module, state, Type2Config(z_threshold=None))
    return state.masks


@pytest.mark.parametrize("prior", [hard, ard], ids=["hard", "ard"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lambda_to_infinity_prunes_everything_and_to_zero_nothing(prior, tied):
    assert Type2Config().threshold is not None
    pruned = _kept_after_one_update(prior, 1e12, tied)
    kept = _kept_after_one_update(prior, 1e-12, tied)
    for site in SITES:
        assert not pruned[site].any(), site
        assert kept[site].all(), site


# ----------------------------------------------------------------------------- laplace = l1


@pytest.mark.parametrize("tied", [True, False])
def test_laplace_log_prior_is_an_l1_penalty_of_strength_one_over_b_n(tied):
    space = get_space("nb201")
    net = SumNet(space, tied=tied)
    b = {"edge_switch": 0.2, "op_switch": 0.05}
    index = None if tied else net.cell_type_index
    hypers = laplace.init_hypers(space, scale_edge=b["edge_switch"], scale_op=b["op_switch"],
                                 cell_type_index=index)
    switches = _switches(space, lead=None if tied else 3)
    trace = _trace(laplace, net, hypers, switches)
    for site in SITES:
        s = switches[site]
        expected = -s.abs().sum() / b[site] - s.numel() * math.log(2 * b[site])
        assert trace.nodes[site]["log_prob_sum"].item() == pytest.approx(expected.item(),
                                                                         rel=1e-12)
    # next to the mean minibatch loss: + sum |s| / (b N) (and a constant)
    x, y = _batch()
    objective = map_objective(laplace, net, switches, x, y, hypers, NUM_DATA)
    mean_loss = -trace.nodes["obs"]["log_prob_sum"] / NUM_DATA
    l1 = sum(switches[k].abs().sum() / (b[k] * NUM_DATA) for k in SITES)
    constant = sum(switches[k].numel() * math.log(2 * b[k]) / NUM_DATA for k in SITES)
    assert objective.item() == pytest.approx((mean_loss + l1 + constant).item(), rel=1e-12)


# ----------------------------------------------------------------------------- options


def test_prior_options_are_the_init_hypers_keywords():
    hard_options = {"lambda_edge": 0.02, "lambda_op": 0.02, "curvature_multiplier": 1.0,
                    "ard_iterations": 2000}
    assert models.prior_options("hard") == hard_options
    assert models.prior_options("ard") == hard_options  # ard takes hard's
    assert models.prior_options("laplace") == {"scale_edge": 0.05, "scale_op": 0.05}
    assert models.prior_options(models.load_prior("horseshoe")) == {"tau0": 1.0}
    hypers = hard.init_hypers(get_space("nb201"), ard_iterations=3)
    assert hypers["ard_iterations"] == 3


def test_check_prior_options_names_the_valid_ones():
    models.check_prior_options("laplace", {"scale_edge": 0.1})
    models.check_prior_options("hard", {"lambda_op": 1, "ard_iterations": 5})
    with pytest.raises(ValueError, match=r"'laplace' has no option 'lambda_edge'; "
                                         r"its options: scale_edge, scale_op"):
        models.check_prior_options("laplace", {"lambda_edge": 0.5})
    with pytest.raises(ValueError, match="tau0"):
        models.check_prior_options("horseshoe", {"tau": 1.0})
    with pytest.raises(ValueError, match="'ard_iterations' must be an integer"):
        models.check_prior_options("hard", {"ard_iterations": 2.5})
    with pytest.raises(ValueError, match="'scale_op' must be a number"):
        models.check_prior_options("laplace", {"scale_op": "big"})


def test_option_values_are_checked_by_init_hypers():
    space = get_space("nb201")
    with pytest.raises(ValueError, match="scale_op must be positive"):
        laplace.init_hypers(space, scale_op=0.0)
    with pytest.raises(ValueError, match="ard_iterations"):
        hard.init_hypers(space, ard_iterations=0)


def test_a_prior_without_option_defaults_is_rejected(tmp_path):
    path = tmp_path / "no_default.py"
    path.write_text("def init_hypers(space, *, width, cell_type_index=None):\n    return {}\n"
                    "def model(net, x, y, hypers, num_data):\n    pass\n")
    with pytest.raises(ValueError, match="option 'width' has no default"):
        models.load_prior(path)


# ----------------------------------------------------------------------------- hard = hierarchy


def _hard_after_update(tied: bool):
    space = get_space("nb201")
    net = SumNet(space, tied=tied)
    index = None if tied else net.cell_type_index
    hypers = hard.init_hypers(space, lambda_edge=0.05, lambda_op=0.05, cell_type_index=index)
    posterior = _diagonal_posterior(space, lead=None if tied else 3)
    posterior.mean["edge_switch"][..., 0] = 0.01  # edge 0 -> 1 dies: node 1 loses its input
    return space, net, hard.update_hypers(posterior, hypers)


def _traced_variance(trace, site):
    """The variance of the traced ``N(0, variance)`` of a site, 0 where it is masked out."""
    fn, mask = trace.nodes[site]["fn"], True
    while not isinstance(fn, dist.Normal):
        if isinstance(fn, dist.MaskedDistribution):
            mask = fn._mask
        fn = fn.base_dist
    variance = fn.scale**2
    if site == "op_switch" and not isinstance(mask, bool):
        mask = mask.unsqueeze(-1) if mask.dim() < variance.dim() else mask
    return variance * mask


@pytest.mark.parametrize("tied", [True, False])
def test_hard_model_variances_are_the_hierarchy_of_the_own_variances(tied):
    space, net, hypers = _hard_after_update(tied)
    own = hypers["gamma_own"]
    eff_edge, eff_op = hard.apply_hierarchy(own["edge_switch"], own["op_switch"],
                                            hypers["edges"], hypers["num_inputs"])
    assert not torch.equal(eff_op, own["op_switch"])  # the hierarchy acts
    assert eff_edge[0, 2] == 0  # 1 -> 2 leaves the dead node
    trace = _trace(hard, net, hypers, _switches(space, lead=None if tied else 3))
    rows = slice(None) if tied else net.cell_type_index
    for site, effective in (("edge_switch", eff_edge), ("op_switch", eff_op)):
        torch.testing.assert_close(_traced_variance(trace, site), effective[rows],
                                   rtol=1e-12, atol=0)
        torch.testing.assert_close(hypers["gamma"][site], effective, rtol=0, atol=0)

    # the model reads the own variances: changing one changes what it samples from
    changed = {**hypers, "gamma_own": {**own, "edge_switch": own["edge_switch"] * 4}}
    trace = _trace(hard, net, changed, _switches(space, lead=None if tied else 3))
    eff_edge4, _ = hard.apply_hierarchy(own["edge_switch"] * 4, own["op_switch"],
                                        hypers["edges"], hypers["num_inputs"])
    torch.testing.assert_close(_traced_variance(trace, "edge_switch"), eff_edge4[rows])


def test_hard_starts_at_variance_one_and_ard_has_no_hierarchy():
    space = get_space("nb201")
    net = SumNet(space)
    start = _trace(hard, net, hard.init_hypers(space), _switches(space))
    for site in SITES:
        assert torch.all(_traced_variance(start, site) == 1)
    posterior = _diagonal_posterior(space)
    new = ard.update_hypers(posterior, ard.init_hypers(space, lambda_edge=0.05, lambda_op=0.05))
    trace = _trace(ard, net, new, _switches(space))
    for site in SITES:
        torch.testing.assert_close(_traced_variance(trace, site), new["gamma_own"][site])
        assert torch.equal(new["gamma"][site], new["gamma_own"][site])


# ----------------------------------------------------------------------------- the docs example


def _docs_prior() -> str:
    text = (REPO / "docs" / "contracts.md").read_text()
    match = re.search(r"<!-- complete prior file -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/contracts.md lost its complete prior listing"
    return match.group(1)


def test_the_prior_in_the_docs_is_a_working_file(tmp_path):
    path = tmp_path / "ridge.py"
    path.write_text(_docs_prior())
    prior = models.load_prior(path)
    assert models.prior_options(prior) == {"sigma": 0.5}
    space = get_space("nb201")
    net = SumNet(space, tied=False)
    hypers = prior.init_hypers(space, sigma=0.25, cell_type_index=net.cell_type_index)
    switches = _switches(space, lead=3)
    trace = _trace(prior, net, hypers, switches)
    for site in SITES:
        expected = dist.Normal(0.0, torch.tensor(0.25, dtype=F64)).log_prob(switches[site]).sum()
        assert trace.nodes[site]["log_prob_sum"].item() == pytest.approx(expected.item())
    # the defaults filled in by load_prior
    assert prior.SITES == SITES
    assert prior.site_gamma(hypers, "op_switch").shape == (3, space.num_edges, space.num_ops)
    assert prior.effective_gamma(hypers)["edge_switch"].shape == (1, space.num_edges)


def test_the_smallest_prior_file_is_at_most_30_lines_of_code():
    assert _code_lines(REPO / "models" / "laplace.py") <= 30
    assert _code_lines_of(_docs_prior()) <= 30


def _code_lines(path: Path) -> int:
    return _code_lines_of(path.read_text())


def _code_lines_of(source: str) -> int:
    """Lines that are neither blank, comments nor part of a docstring."""
    import ast
    import io
    import tokenize

    docstring_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                and isinstance(first.value.value, str):
            docstring_lines.update(range(first.lineno, first.end_lineno + 1))
    code_lines = {
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENDMARKER)
    }
    return len(code_lines - docstring_lines)
