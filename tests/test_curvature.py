"""Curvature backends against brute force (torch.func jacobians / hessians) in float64."""

import pytest
import torch
from mathbed import (
    DT,
    TIGHT,
    LinearGaussian,
    assert_sites_close,
    brute_ggn,
    brute_hessian,
    iid_design,
    linear_forward,
    rng,
    simulate,
    tiny_switch_case,
)
from torch import nn

from pyronas.inference.curvature import BACKENDS, diagonal_curvature, register_backend


def test_registry_has_the_three_backends():
    assert {"ggn", "fisher", "exact"} <= set(BACKENDS)


def test_linear_model_ggn_equals_exact_hessian_equals_brute_force():
    torch.manual_seed(0)
    x = torch.randn(7, 3, dtype=DT)
    y = torch.randint(0, 4, (7,))
    sites = {"w": torch.randn(3, 4, dtype=DT), "b": torch.randn(4, dtype=DT)}

    def forward(s, xb):
        return xb @ s["w"] + s["b"]

    ggn = diagonal_curvature(forward, sites, [(x, y)], backend="ggn")
    exact = diagonal_curvature(forward, sites, [(x, y)], backend="exact")
    brute = brute_ggn(forward, sites, x, "categorical")
    assert_sites_close(ggn, brute, **TIGHT)
    # logits are linear in the sites, so the GGN is the Hessian
    assert_sites_close(exact, brute_hessian(forward, sites, x, y, "categorical"), **TIGHT)
    assert_sites_close(exact, ggn, **TIGHT)
    # closed form for the bias: mean over samples of p (1 - p)
    p = torch.softmax(forward(sites, x), -1)
    torch.testing.assert_close(ggn["b"], (p * (1 - p)).mean(0), **TIGHT)


def test_linear_gaussian_ggn_is_xtx_over_sigma2():
    gen = rng(0)
    x = iid_design(6, 3, gen)
    problem = LinearGaussian(x, simulate(x, [1.0, -0.5, 0.2], 0.5, gen), noise_std=0.5)
    sites = {"w": torch.randn(3, generator=gen, dtype=DT)}
    curv = diagonal_curvature(
        linear_forward, sites, [(problem.x, problem.y)], likelihood="gaussian", noise_std=0.5
    )
    torch.testing.assert_close(curv["w"], (x**2).mean(0) / 0.25, **TIGHT)
    torch.testing.assert_close(curv["w"], torch.diagonal(problem.ggn()), **TIGHT)


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_cnn_ggn_matches_brute_force(likelihood):
    net, forward, sites, x, y = tiny_switch_case()
    if likelihood == "gaussian":
        y = torch.randn(5, 4, dtype=DT)
    ggn = diagonal_curvature(
        forward, sites, [(x, y)], likelihood=likelihood, noise_std=0.7, chunk_size=2
    )
    assert_sites_close(ggn, brute_ggn(forward, sites, x, likelihood, 0.7), **TIGHT)
    assert all((v >= 0).all() for v in ggn.values())


def test_cnn_exact_matches_torch_func_hessian():
    net, forward, sites, x, y = tiny_switch_case()
    exact = diagonal_curvature(forward, sites, [(x, y)], backend="exact")
    brute = brute_hessian(forward, sites, x, y, "categorical")
    assert_sites_close(exact, brute, **TIGHT)
    # the network is nonlinear in the switches: the Hessian differs from the GGN
    ggn = brute_ggn(forward, sites, x, "categorical")
    assert not torch.allclose(exact["op"], ggn["op"], rtol=1e-3)


def test_cnn_fisher_expectation_is_ggn():
    net, forward, sites, x, y = tiny_switch_case()
    gen = torch.Generator().manual_seed(3)
    fisher = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=gen, num_samples=4000
    )
    ggn = brute_ggn(forward, sites, x, "categorical")
    assert_sites_close(fisher, ggn, rtol=0.08, atol=1e-6)
    assert all((v >= 0).all() for v in fisher.values())
    # a single draw is a noisy but non-negative estimate; seeded runs repeat exactly
    one_a = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=torch.Generator().manual_seed(5)
    )
    one_b = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=torch.Generator().manual_seed(5)
    )
    assert_sites_close(one_a, one_b, **TIGHT)


def test_gaussian_fisher_expectation_is_ggn():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=DT)
    sites = {"w": torch.randn(3, 2, dtype=DT)}

    def forward(s, xb):
        return torch.tanh(xb @ s["w"])

    fisher = diagonal_curvature(
        forward, sites, [(x, torch.zeros(4, 2, dtype=DT))], likelihood="gaussian",
        backend="fisher", noise_std=0.5, num_samples=6000,
        generator=torch.Generator().manual_seed(0),
    )
    ggn = brute_ggn(forward, sites, x, "gaussian", 0.5)
    assert_sites_close(fisher, ggn, rtol=0.08, atol=1e-6)


@pytest.mark.parametrize("backend", ["ggn", "exact"])
def test_average_over_batches_equals_concatenated_batch(backend):
    net, forward, sites, x, y = tiny_switch_case()
    x2 = torch.randn(5, 2, 6, 6, dtype=DT)
    y2 = torch.tensor([3, 2, 1, 0, 0])
    split = diagonal_curvature(forward, sites, [(x, y), (x2, y2)], backend=backend)
    joint = diagonal_curvature(
        forward, sites, [(torch.cat([x, x2]), torch.cat([y, y2]))], backend=backend
    )
    assert_sites_close(split, joint, **TIGHT)
    # max_batches keeps only the first batch
    first = diagonal_curvature(forward, sites, [(x, y), (x2, y2)], backend=backend, max_batches=1)
    assert_sites_close(
        first, diagonal_curvature(forward, sites, [(x, y)], backend=backend), **TIGHT
    )


def test_sum_reduction_multiplies_by_batch_size():
    net, forward, sites, x, y = tiny_switch_case()
    mean = diagonal_curvature(forward, sites, [(x, y)])
    total = diagonal_curvature(forward, sites, [(x, y)], reduction="sum")
    assert_sites_close(total, {k: 5 * v for k, v in mean.items()}, **TIGHT)


def test_module_is_switched_to_eval_and_restored():
    net, forward, sites, x, y = tiny_switch_case()
    ref = diagonal_curvature(forward, sites, [(x, y)])  # net in eval mode
    net.train()
    curv = diagonal_curvature(forward, sites, [(x, y)], module=net)
    assert_sites_close(curv, ref, **TIGHT)
    assert net.training and net.bn.training
    # running statistics untouched
    net.eval()
    assert_sites_close(diagonal_curvature(forward, sites, [(x, y)]), ref, **TIGHT)


def test_register_backend_and_errors():
    def zeros(forward, sites, x, y, likelihood, noise_std, module, **_):
        return {k: torch.zeros_like(v) for k, v in sites.items()}

    register_backend("zeros_for_test", zeros)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_backend("zeros_for_test", zeros)
        out = diagonal_curvature(
            lambda s, xb: xb * s["a"], {"a": torch.ones(1)}, [(torch.ones(2, 1), torch.zeros(2))],
            likelihood="gaussian", backend="zeros_for_test",
        )
        assert out["a"].item() == 0.0
    finally:
        del BACKENDS["zeros_for_test"]
    with pytest.raises(ValueError, match="unknown curvature backend"):
        diagonal_curvature(lambda s, xb: xb, {"a": torch.ones(1)}, [], backend="nope")
    with pytest.raises(ValueError, match="unknown likelihood"):
        diagonal_curvature(lambda s, xb: xb, {"a": torch.ones(1)}, [], likelihood="poisson")
    with pytest.raises(ValueError, match="no batches"):
        diagonal_curvature(lambda s, xb: xb, {"a": torch.ones(1)}, [])


@pytest.mark.parametrize("affine", [True, False])
def test_affine_batch_norms_compute_the_same_eval_function(affine):
    from pyronas.inference.curvature import affine_batch_norms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, affine=affine)).to(DT)
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    if affine:
        with torch.no_grad():
            net[1].weight.normal_()
            net[1].bias.normal_()
    x = torch.randn(4, 2, 5, 5, dtype=DT)
    net.eval()
    ref = net(x)
    with affine_batch_norms(net):
        assert "forward" in net[1].__dict__
        torch.testing.assert_close(net(x), ref, rtol=1e-12, atol=1e-12)
    assert "forward" not in net[1].__dict__
    net.train()  # batch statistics: left alone
    with affine_batch_norms(net):
        assert "forward" not in net[1].__dict__


@pytest.mark.parametrize("backend", ["ggn", "fisher"])
def test_affine_batch_norm_option_keeps_the_curvature(backend):
    net, forward, sites, x, y = tiny_switch_case()
    net.train()  # the backends switch to eval mode, then patch the batch norms

    def run(**options):
        return diagonal_curvature(
            forward, sites, [(x, y)], backend=backend, module=net,
            generator=torch.Generator().manual_seed(3), **options,
        )

    ref = run()
    assert_sites_close(run(affine_batch_norm=True), ref, rtol=1e-10, atol=1e-12)
    assert net.training and all("forward" not in m.__dict__ for m in net.modules())
