"""Every prior model file in models/ follows the contract: sites, shapes, plates, scaling."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from torch import nn

import pyronas.models as models
from pyronas.space import get_space

MODELS_DIR = Path(models.__file__).resolve().parent
PRIOR_FILES = sorted(
    p for p in MODELS_DIR.glob("*.py")
    if not p.stem.startswith("_") and p.stem not in models.SHARED_MODULES | models.WEIGHT_PRIORS
)
NUM_DATA = 50
BATCH = 5


class TinyNet(nn.Module):
    """Stand-in supernet: logits depend on every switch so that the sites are used."""

    def __init__(self, space, tied: bool, cell_types=(0, 1, 0), num_classes: int = 3) -> None:
        super().__init__()
        num_types = len(space.cell_types)
        self.tied = tied
        self.cell_type_index = torch.tensor(cell_types, dtype=torch.long) % num_types
        lead = num_types if tied else len(cell_types)
        self.edge_shape, self.op_shape = space.switch_shapes(None if tied else lead)
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x, edge_switch, op_switch):
        assert edge_switch.shape == self.edge_shape, edge_switch.shape
        assert op_switch.shape == self.op_shape, op_switch.shape
        gate = (edge_switch.unsqueeze(-1) * op_switch).mean()
        return self.linear(x) * gate


def _batch():
    x = torch.randn(BATCH, 4)
    y = torch.randint(0, 3, (BATCH,))
    return x, y


def _hypers(prior, space, net):
    index = None if net.tied else net.cell_type_index
    return prior.init_hypers(space, cell_type_index=index)


@pytest.fixture(params=PRIOR_FILES, ids=lambda p: p.stem)
def prior(request):
    return models.load_prior(request.param)


def test_builtin_priors_are_discovered():
    assert {"hard", "ard", "laplace", "horseshoe"} <= {p.stem for p in PRIOR_FILES}
    assert models.list_priors() == [p.stem for p in PRIOR_FILES]
    assert "common" not in models.list_priors()
    with pytest.raises(ValueError, match="unknown prior 'common'"):
        models.load_prior("common")


@pytest.mark.parametrize("space_name", ["bayesnas8", "nb201"])
@pytest.mark.parametrize("tied", [True, False])
def test_trace_sites_shapes_plates_and_scale(prior, space_name, tied):
    space = get_space(space_name)
    net = TinyNet(space, tied)
    hypers = _hypers(prior, space, net)
    x, y = _batch()
    trace = poutine.trace(prior.model).get_trace(net, x, y, hypers, NUM_DATA)
    trace.compute_log_prob()

    assert tuple(prior.SITES) == ("edge_switch", "op_switch")
    for site in (*prior.SITES, "obs"):
        assert site in trace.nodes, site
    assert trace.nodes["edge_switch"]["value"].shape == net.edge_shape
    assert trace.nodes["op_switch"]["value"].shape == net.op_shape

    lead = "cell_type" if tied else "cell"
    lead_size = len(space.cell_types) if tied else len(net.cell_type_index)
    for site in prior.SITES:
        frames = {f.name: (f.dim, f.size) for f in trace.nodes[site]["cond_indep_stack"]}
        assert frames == {lead: (-2, lead_size), "edge": (-1, space.num_edges)}
    assert trace.nodes["op_switch"]["fn"].event_shape == (space.num_ops,)

    obs = trace.nodes["obs"]
    assert obs["is_observed"]
    assert torch.equal(obs["value"], y)
    assert obs["scale"] == pytest.approx(NUM_DATA / BATCH)
    frames = {f.name: (f.dim, f.size) for f in obs["cond_indep_stack"]}
    assert frames == {"data": (-1, BATCH)}  # subsampled plate: frame size is the batch

    assert torch.isfinite(trace.log_prob_sum())


@pytest.mark.parametrize("tied", [True, False])
def test_conditioned_log_joint_matches_hand_computation(prior, tied):
    """Conditioning on switch values gives log prior + (N/B) * log likelihood."""
    space = get_space("nb201")
    net = TinyNet(space, tied)
    hypers = _hypers(prior, space, net)
    x, y = _batch()
    switches = {
        "edge_switch": 0.5 + torch.rand(net.edge_shape),
        "op_switch": 0.5 + torch.rand(net.op_shape),
    }
    conditioned = poutine.condition(prior.model, data=switches)
    trace = poutine.trace(conditioned).get_trace(net, x, y, hypers, NUM_DATA)
    logits = net(x, switches["edge_switch"], switches["op_switch"])
    log_lik = dist.Categorical(logits=logits).log_prob(y).sum() * NUM_DATA / BATCH
    gamma = prior.effective_gamma(hypers)
    log_prior = 0.0
    for site, value in switches.items():
        g = gamma[site] if tied else gamma[site][net.cell_type_index]
        if "scale" in hypers:  # Laplace: the variance 2 b^2 gives back b
            b = (g / 2).sqrt().to(value.dtype)
            log_prior += dist.Laplace(0.0, b).log_prob(value).sum()
        else:
            log_prior += dist.Normal(0.0, g.sqrt().to(value.dtype)).log_prob(value).sum()
    trace.compute_log_prob()
    switch_and_obs = sum(trace.nodes[s]["log_prob_sum"] for s in ("edge_switch", "op_switch"))
    assert switch_and_obs.item() == pytest.approx(float(log_prior), rel=1e-5)
    assert trace.nodes["obs"]["log_prob_sum"].item() == pytest.approx(log_lik.item(), rel=1e-5)


def test_effective_gamma_and_optional_functions(prior):
    space = get_space("bayesnas8")
    hypers = prior.init_hypers(space)
    edge_shape, op_shape = space.switch_shapes()
    gamma = prior.effective_gamma(hypers)
    assert gamma["edge_switch"].shape == edge_shape
    assert gamma["op_switch"].shape == op_shape
    assert hypers["gamma"]["op_switch"].shape == op_shape
    assert isinstance(hypers["learnable"], list)
    switches = {"edge_switch": torch.ones(edge_shape), "op_switch": torch.ones(op_shape)}
    if hasattr(prior, "map_penalty"):
        penalty = prior.map_penalty(switches, hypers)
        assert penalty.dim() == 0 and torch.isfinite(penalty)
    if hasattr(prior, "update_hypers"):
        from types import SimpleNamespace

        posterior = SimpleNamespace(
            mean=switches,
            curvature={k: torch.full_like(v, 0.1) for k, v in switches.items()},
        )
        new = prior.update_hypers(posterior, hypers)
        assert new["gamma"]["op_switch"].shape == op_shape
        assert new is not hypers and torch.all(hypers["gamma"]["edge_switch"] == 1)


def test_zero_variance_switches_are_masked():
    """A pruned switch (gamma 0) is a point mass at 0: no contribution, no NaN."""
    prior = models.load_prior("ard")
    space = get_space("nb201")
    net = TinyNet(space, tied=True)
    hypers = prior.init_hypers(space)
    hypers["gamma"]["edge_switch"][0, 1] = 0.0  # ard samples from gamma directly
    switches = {"edge_switch": torch.ones(net.edge_shape), "op_switch": torch.ones(net.op_shape)}
    switches["edge_switch"][0, 1] = 0.0
    trace = poutine.trace(poutine.condition(prior.model, data=switches)).get_trace(
        net, *_batch(), hypers, NUM_DATA
    )
    trace.compute_log_prob()
    expected = (space.num_edges - 1) * dist.Normal(0.0, 1.0).log_prob(torch.tensor(1.0))
    assert trace.nodes["edge_switch"]["log_prob_sum"].item() == pytest.approx(expected.item())


def test_pyro_autoguide_traces_every_prior(prior):
    """The plate layout is valid Pyro: an AutoDelta guide and an ELBO evaluate."""
    pyro.clear_param_store()
    space = get_space("nb201")
    net = TinyNet(space, tied=False)
    hypers = _hypers(prior, space, net)
    x, y = _batch()
    guide = AutoDelta(prior.model)
    loss = Trace_ELBO().loss(prior.model, guide, net, x, y, hypers, NUM_DATA)
    assert math.isfinite(loss)


def test_horseshoe_hyperparameters_get_gradients():
    prior = models.load_prior("horseshoe")
    space = get_space("nb201")
    net = TinyNet(space, tied=True)
    hypers = prior.init_hypers(space)
    for key in hypers["learnable"]:
        for tensor in hypers[key].values():
            tensor.requires_grad_(True)
    switches = {
        "edge_switch": 2.0 * torch.rand(net.edge_shape),
        "op_switch": torch.ones(net.op_shape),
    }
    trace = poutine.trace(poutine.condition(prior.model, data=switches)).get_trace(
        net, *_batch(), hypers, NUM_DATA
    )
    assert "hyperprior" in trace.nodes
    trace.log_prob_sum().backward()
    grad = hypers["log_tau"]["edge_switch"].grad
    # u = log tau; at tau = lam = 1 each edge switch adds d/du log N(s | 0, e^{2u}) = s^2 - 1 and
    # the hyperprior d/du [log HalfCauchy(e^u; 1) + u] = 1 - 2 e^{2u} / (1 + e^{2u}) = 0.
    expected = (switches["edge_switch"].double() ** 2 - 1).sum()
    assert grad.item() == pytest.approx(expected.item(), rel=1e-5)
    assert hypers["log_lam"]["op_switch"].grad.shape == net.op_shape


def test_horseshoe_effective_gamma_is_tau2_lam2():
    prior = models.load_prior("horseshoe")
    space = get_space("nb201")
    hypers = prior.init_hypers(space)
    hypers["log_tau"]["op_switch"][0] = math.log(0.5)
    hypers["log_lam"]["op_switch"][0, 2, 1] = math.log(3.0)
    gamma = prior.effective_gamma(hypers)
    assert gamma["op_switch"][0, 2, 1].item() == pytest.approx(0.25 * 9.0)
    assert gamma["op_switch"][0, 0, 0].item() == pytest.approx(0.25)
    assert gamma["edge_switch"][0, 0].item() == pytest.approx(1.0)


def test_laplace_gamma_is_its_variance_and_fixed():
    prior = models.load_prior("laplace")
    hypers = prior.init_hypers(get_space("nb201"), scale_edge=0.1, scale_op=0.2)
    assert torch.allclose(hypers["gamma"]["edge_switch"], torch.tensor(0.02, dtype=torch.float64))
    assert torch.allclose(hypers["gamma"]["op_switch"], torch.tensor(0.08, dtype=torch.float64))
    assert hypers["learnable"] == []
    assert not hasattr(prior, "update_hypers") and not hasattr(prior, "map_penalty")


# ----------------------------------------------------------------------------- load_prior


def test_load_prior_by_name_and_by_path(tmp_path):
    assert models.load_prior("hard").__name__ == "pyronas.models.hard"
    copy = tmp_path / "my_prior.py"
    shutil.copy(MODELS_DIR / "hard.py", copy)
    module = models.load_prior(str(copy))
    assert callable(module.model) and module.SITES == ("edge_switch", "op_switch")
    assert models.load_prior(copy).__file__ == str(copy)
    space = get_space("nb201")
    net = TinyNet(space, tied=True)
    trace = poutine.trace(module.model).get_trace(
        net, *_batch(), module.init_hypers(space), NUM_DATA
    )
    assert "obs" in trace.nodes


def test_load_prior_unknown_name():
    with pytest.raises(ValueError, match="unknown prior 'nope'.*hard"):
        models.load_prior("nope")


def test_load_prior_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        models.load_prior(str(tmp_path / "absent.py"))


def test_load_prior_bad_files(tmp_path):
    missing = tmp_path / "missing.py"
    missing.write_text("SITES = ('edge_switch', 'op_switch')\ndef init_hypers(space):\n    pass\n")
    with pytest.raises(ValueError, match="missing model"):
        models.load_prior(str(missing))

    not_callable = tmp_path / "not_callable.py"
    not_callable.write_text(
        "SITES = ('edge_switch',)\ninit_hypers = 3\ndef model(*a):\n    pass\nmap_penalty = 1\n"
    )
    with pytest.raises(ValueError, match="init_hypers is not callable.*map_penalty is not"):
        models.load_prior(str(not_callable))

    bad_sites = tmp_path / "bad_sites.py"
    bad_sites.write_text("SITES = 'edge'\ndef init_hypers(s):\n    pass\ndef model(*a):\n    pass")
    with pytest.raises(ValueError, match="SITES"):
        models.load_prior(str(bad_sites))

    broken = tmp_path / "broken.py"
    broken.write_text("def model(:\n")
    with pytest.raises(ValueError, match="failed to import"):
        models.load_prior(str(broken))

    old_style = tmp_path / "old_style.py"
    old_style.write_text("from pyronas.models._common import sample_switches\n")
    with pytest.raises(ValueError, match="_common is now pyronas.models.common"):
        models.load_prior(str(old_style))
