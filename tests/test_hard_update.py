"""BayesNAS type-II update of the HARD prior on hand-computed cases (float64)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pyronas.models import ard, hard
from pyronas.models.common import SITES
from pyronas.space import get_space

F64 = torch.float64


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _posterior(mean: dict, curvature: dict) -> SimpleNamespace:
    return SimpleNamespace(mean=mean, curvature=curvature)


def _one_step(hypers: dict) -> dict:
    """The single (original BayesNAS) update step instead of the fixed point."""
    return {**hypers, "ard_iterations": 1}


def _constant_posterior(space, mean: float, curvature: float, lead=None) -> SimpleNamespace:
    edge_shape, op_shape = space.switch_shapes(lead)
    return _posterior(
        {"edge_switch": torch.full(edge_shape, mean, dtype=F64),
         "op_switch": torch.full(op_shape, mean, dtype=F64)},
        {"edge_switch": torch.full(edge_shape, curvature, dtype=F64),
         "op_switch": torch.full(op_shape, curvature, dtype=F64)},
    )


# ----------------------------------------------------------------------------- hierarchy

SMALL_CELL = (((0, 2), (1, 2), (2, 3)),)  # inputs 0, 1; node 2 fed by both; node 3 fed by 2


def test_hierarchy_by_hand():
    gamma_edge = t([[2.0, 1.0, 3.0]])
    gamma_op = t([[[2.0, 1.0], [1.0, 1.0], [6.0, 2.0]]])
    eff_edge, eff_op = hard.apply_hierarchy(gamma_edge, gamma_op, SMALL_CELL, num_inputs=2)
    # Edges from inputs keep their variance; ops add the edge precision.
    # edge 0: ops 1/(1/2 + 1/2) = 1, 1/(1 + 1/2) = 2/3; edge 1: ops 1/2, 1/2.
    # Node 2: gamma_in = max(1, 2/3, 1/2, 1/2) = 1.
    # edge 2 (2 -> 3): 1/(1/3 + 1) = 3/4; ops 1/(1/6 + 4/3) = 2/3, 1/(1/2 + 4/3) = 6/11.
    assert torch.allclose(eff_edge, t([[2.0, 1.0, 0.75]]))
    assert torch.allclose(eff_op, t([[[1.0, 2 / 3], [0.5, 0.5], [2 / 3, 6 / 11]]]))
    # The inputs are not modified.
    assert torch.equal(gamma_edge, t([[2.0, 1.0, 3.0]]))


def test_dead_edge_switches_off_its_ops():
    gamma_edge = t([[0.0, 1.0, 3.0]])
    gamma_op = torch.ones(1, 3, 2, dtype=F64)
    eff_edge, eff_op = hard.apply_hierarchy(gamma_edge, gamma_op, SMALL_CELL, num_inputs=2)
    assert torch.all(eff_op[0, 0] == 0)
    assert torch.all(eff_op[0, 1] > 0) and eff_edge[0, 2] > 0  # node 2 still fed by edge 1


def test_node_without_live_input_switches_off_its_outputs():
    space = get_space("bayesnas8")
    gamma_edge = torch.ones(space.switch_shapes()[0], dtype=F64)
    gamma_op = torch.ones(space.switch_shapes()[1], dtype=F64)
    # Normal cell: node 2 (n0) is fed by edges 0 (1->2) and 1 (0->2); edge 7 is 2->5.
    gamma_edge[0, 0] = 0.0
    gamma_edge[0, 1] = 0.0
    edges = tuple(tuple(space.edges[c]) for c in space.cell_types)
    eff_edge, eff_op = hard.apply_hierarchy(gamma_edge, gamma_op, edges, space.num_inputs)
    assert eff_edge[0, 7] == 0 and torch.all(eff_op[0, 7] == 0)
    assert eff_edge[0, 6] > 0 and torch.all(eff_op[0, 6] > 0)  # in1 -> n3 unaffected
    # The reduction cell is untouched: its node 2 keeps live inputs.
    assert torch.all(eff_edge[1] > 0)


def test_dependency_cascades_and_acts_through_ops():
    chain = (((0, 1), (1, 2), (2, 3)),)  # one input, nodes 1 -> 2 -> 3
    gamma_edge = torch.ones(1, 3, dtype=F64)
    gamma_op = torch.ones(1, 3, 2, dtype=F64)
    gamma_op[0, 0] = 0.0  # edge 0 alive, but all of its ops are off
    eff_edge, eff_op = hard.apply_hierarchy(gamma_edge, gamma_op, chain, num_inputs=1)
    assert eff_edge[0, 0] == 1.0
    assert torch.all(eff_edge[0, 1:] == 0) and torch.all(eff_op[0, 1:] == 0)


# ----------------------------------------------------------------------------- update


def test_update_by_hand_and_curvature_multiplier():
    """One switch group by hand: Ht = H * m / lambda, alpha = Ht / (1 + gamma Ht)."""
    space = get_space("nb201")
    lam = 0.01
    post = _constant_posterior(space, mean=0.5, curvature=0.02)

    hypers = hard.init_hypers(space, lambda_edge=lam, lambda_op=lam)
    new = hard.update_hypers(post, _one_step(hypers))
    # Mean-loss scale: Ht = 0.02 / 0.01 = 2, gamma = 1: alpha = 2/3.
    omega = math.sqrt(2 / 3)
    own = 0.5 / omega
    assert torch.allclose(new["omega"]["edge_switch"], torch.full((1, 6), omega, dtype=F64))
    assert torch.allclose(new["gamma_own"]["op_switch"], torch.full((1, 6, 4), own, dtype=F64))
    # nb201 edge 0 is 0 -> 1, from the input: effective = own; its ops: own / 2.
    assert new["gamma"]["edge_switch"][0, 0].item() == pytest.approx(own)
    assert new["gamma"]["op_switch"][0, 0, 0].item() == pytest.approx(own / 2)

    # Authors' scale: curvature summed over a batch of 18: Ht = 36, alpha = 36/37.
    hypers18 = hard.init_hypers(space, lambda_edge=lam, lambda_op=lam, curvature_multiplier=18)
    new18 = hard.update_hypers(post, _one_step(hypers18))
    assert new18["gamma_own"]["edge_switch"][0, 0].item() == pytest.approx(
        0.5 / math.sqrt(36 / 37)
    )
    # ... which is the same as dividing lambda by the batch size.
    hypers_small = hard.init_hypers(space, lambda_edge=lam / 18, lambda_op=lam / 18)
    new_small = hard.update_hypers(post, _one_step(hypers_small))
    for site in SITES:
        assert torch.allclose(new18["gamma"][site], new_small["gamma"][site])
        assert torch.allclose(new18["omega"][site], new_small["omega"][site])
    # And the input hypers are untouched.
    assert torch.all(hypers["gamma"]["edge_switch"] == 1)


def test_update_uses_effective_gamma_and_keeps_pruned_at_zero():
    space = get_space("nb201")
    hypers = hard.init_hypers(space, lambda_edge=0.01, lambda_op=0.01)
    hypers["gamma"]["op_switch"][0, 2, 1] = 0.25
    hypers["gamma"]["edge_switch"][0, 3] = 0.0
    post = _constant_posterior(space, mean=0.5, curvature=0.02)  # Ht = 2
    new = hard.update_hypers(post, _one_step(hypers))
    alpha = 2 / (1 + 0.25 * 2)
    assert new["gamma_own"]["op_switch"][0, 2, 1].item() == pytest.approx(0.5 / math.sqrt(alpha))
    assert new["gamma_own"]["edge_switch"][0, 3] == 0
    assert torch.all(new["gamma"]["op_switch"][0, 3] == 0)


def test_untied_switches_of_one_type_form_the_group():
    space = get_space("bayesnas8")
    index = torch.tensor([0, 1, 0])  # cells 0 and 2 are normal cells
    hypers = hard.init_hypers(space, lambda_edge=1.0, lambda_op=1.0, cell_type_index=index)
    edge_shape, op_shape = space.switch_shapes(3)
    mean = {"edge_switch": torch.zeros(edge_shape, dtype=F64),
            "op_switch": torch.ones(op_shape, dtype=F64)}
    curv = {"edge_switch": torch.ones(edge_shape, dtype=F64),
            "op_switch": torch.ones(op_shape, dtype=F64)}
    mean["edge_switch"][0, 4] = 3.0
    mean["edge_switch"][2, 4] = 4.0
    curv["edge_switch"][0, 4] = 1.0
    curv["edge_switch"][2, 4] = 3.0
    new = hard.update_hypers(_posterior(mean, curv), _one_step(hypers))
    # alpha = Ht / (1 + Ht) = 1/2 and 3/4; omega = sqrt(5/4); gamma = ||(3, 4)|| / omega.
    assert new["omega"]["edge_switch"][0, 4].item() == pytest.approx(math.sqrt(1.25))
    assert new["gamma_own"]["edge_switch"][0, 4].item() == pytest.approx(5 / math.sqrt(1.25))
    # The reduction cell (cell 1 alone) had a zero mean: gamma 0 for its edges.
    assert torch.all(new["gamma_own"]["edge_switch"][1] == 0)


def test_update_rejects_wrong_shapes():
    space = get_space("nb201")
    hypers = hard.init_hypers(space)
    post = _constant_posterior(space, mean=1.0, curvature=1.0, lead=3)  # untied shapes
    with pytest.raises(ValueError, match="edge_switch has shape"):
        hard.update_hypers(post, hypers)


def test_ard_prior_has_no_hierarchy():
    space = get_space("nb201")
    post = _constant_posterior(space, mean=0.5, curvature=0.02)
    hypers = ard.init_hypers(space, lambda_edge=0.01, lambda_op=0.01)
    new = ard.update_hypers(post, _one_step(hypers))
    own = 0.5 / math.sqrt(2 / 3)
    for site in SITES:
        assert torch.allclose(new["gamma"][site], torch.full_like(new["gamma"][site], own))


# ----------------------------------------------------------------------------- map penalty


@pytest.mark.parametrize("prior", [hard, ard])
def test_map_penalty_tied_by_hand(prior):
    space = get_space("nb201")
    hypers = prior.init_hypers(space, lambda_edge=0.1, lambda_op=0.01)
    hypers["omega"]["edge_switch"] = t([[1.0, 2.0, 0.0, 0.5, 1.0, 1.0]])
    hypers["omega"]["op_switch"] = torch.full((1, 6, 4), 3.0, dtype=F64)
    edge = torch.tensor([[1.0, -2.0, 5.0, 4.0, 0.0, 0.0]])
    op = torch.zeros(1, 6, 4)
    op[0, 1, 2] = -0.5
    op[0, 5, 0] = 2.0
    value = prior.map_penalty({"edge_switch": edge, "op_switch": op}, hypers)
    # 0.1 * (1 + 4 + 0 + 2) + 0.01 * 3 * (0.5 + 2)
    assert value.item() == pytest.approx(0.7 + 0.075)


def test_map_penalty_untied_group_norm_and_gradient_at_zero():
    space = get_space("nb201")
    index = torch.tensor([0, 0])  # one cell type, two cells
    hypers = hard.init_hypers(space, lambda_edge=0.5, lambda_op=0.2, cell_type_index=index)
    hypers["omega"]["edge_switch"][0, 0] = 2.0
    edge = torch.zeros(2, 6)
    edge[0, 0], edge[1, 0] = 3.0, 4.0
    op = torch.zeros(2, 6, 4)
    op[0, 1, 1], op[1, 1, 1] = 1.0, 1.0
    edge.requires_grad_(True)
    op.requires_grad_(True)
    value = hard.map_penalty({"edge_switch": edge, "op_switch": op}, hypers)
    assert value.item() == pytest.approx(0.5 * 2.0 * 5.0 + 0.2 * math.sqrt(2.0))
    value.backward()
    assert torch.isfinite(edge.grad).all() and torch.isfinite(op.grad).all()
    assert edge.grad[0, 0].item() == pytest.approx(0.5 * 2.0 * 3 / 5)
    assert edge.grad[0, 1] == 0  # zero group: zero subgradient, not NaN


# ----------------------------------------------------------------------------- fixed point


def test_ard_fixed_point_is_tippings_closed_form():
    """One-element groups: the iterated update ends at gamma = max(0, m^2 - 1/Ht)."""
    from pyronas.inference.ard_update import ard_fixed_point

    gen = torch.Generator().manual_seed(0)
    m = torch.randn(200, generator=gen, dtype=F64)
    ht = 10 * torch.rand(200, generator=gen, dtype=F64) + 0.01
    result, shrunk = ard_fixed_point(m, ht, torch.ones(200, dtype=F64))
    closed = (m * m - 1 / ht).clamp_min(0)
    assert torch.allclose(result.gamma, closed, atol=1e-6)
    # survivors: the shrunk value is the ARD posterior mean m * gamma Ht / (1 + gamma Ht)
    assert torch.allclose(shrunk, m * closed * ht / (1 + closed * ht), atol=1e-6)
    assert torch.all((shrunk == 0) == (m * m * ht <= 1))


def test_flat_ard_prior_keeps_a_switch_iff_its_removal_costs_more_than_lambda():
    """m^2 H > lambda: the quadratic cost m^2 H / 2 of zeroing a switch exceeds lambda / 2."""
    space = get_space("nb201")
    edge_shape, op_shape = space.switch_shapes()
    gen = torch.Generator().manual_seed(1)
    mean = {"edge_switch": torch.rand(edge_shape, generator=gen, dtype=F64) + 0.5,
            "op_switch": torch.rand(op_shape, generator=gen, dtype=F64)}
    curv = {k: 0.1 * torch.rand(v.shape, generator=gen, dtype=F64) for k, v in mean.items()}
    kept_before = None
    for lam in (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        hypers = ard.init_hypers(space, lambda_edge=lam, lambda_op=lam)
        new = ard.update_hypers(_posterior(mean, curv), hypers)
        kept = new["gamma"]["op_switch"] > 0
        assert torch.equal(kept, mean["op_switch"] ** 2 * curv["op_switch"] > lam)
        if kept_before is not None:
            assert torch.all(kept <= kept_before)  # a larger lambda keeps a subset
        kept_before = kept


def test_hard_fixed_point_prunes_ops_of_a_dead_edge_and_outputs_of_a_dead_node():
    space = get_space("nb201")  # edges: 0->1, 0->2, 1->2, 0->3, 1->3, 2->3
    post = _constant_posterior(space, mean=1.0, curvature=1.0)
    post.mean["edge_switch"][0, 0] = 0.01  # edge 0 -> 1 is worthless: node 1 loses its input
    new = hard.update_hypers(post, hard.init_hypers(space, lambda_edge=0.01, lambda_op=0.01))
    gamma = new["gamma"]
    assert gamma["edge_switch"][0, 0] == 0 and torch.all(gamma["op_switch"][0, 0] == 0)
    for e in (2, 4):  # edges out of node 1
        assert gamma["edge_switch"][0, e] == 0 and torch.all(gamma["op_switch"][0, e] == 0)
    for e in (1, 3, 5):
        assert gamma["edge_switch"][0, e] > 0 and torch.all(gamma["op_switch"][0, e] > 0)
