"""Curvature backends against brute force (torch.func jacobians / hessians) in float64."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian, jacrev

from pyronas.inference.curvature import (
    BACKENDS,
    diagonal_curvature,
    per_sample_nll,
    register_backend,
)

DTYPE = torch.float64


class TinySwitchNet(nn.Module):
    """Stem conv + BatchNorm, then two switched edges into a node with four switched ops:
    separable conv (depthwise + pointwise), dilated conv, max pool, avg pool. Branches
    (sep + dil) and (max + avg) are summed, the two sums concatenated, then a classifier."""

    def __init__(self, c_in: int = 2, c: int = 3, classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(c_in, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.dil = nn.Conv2d(c, c, 3, padding=2, dilation=2, bias=False)
        self.pool_bn = nn.BatchNorm2d(c, affine=False)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x, edge, op):
        h = self.bn(self.stem(x))
        a = torch.relu(edge[0] * h)
        b = torch.tanh(edge[1] * h)
        sep = self.pw(self.dw(a))
        dil = self.dil(b)
        mx = self.pool_bn(F.max_pool2d(a, 3, stride=1, padding=1))
        av = F.avg_pool2d(b, 3, stride=1, padding=1)
        branch1 = op[0] * sep + op[1] * dil
        branch2 = op[2] * mx + op[3] * av
        z = torch.cat([branch1, branch2], 1)
        return self.head(torch.tanh(z).mean((2, 3)))


def _make_net():
    torch.manual_seed(1)
    net = TinySwitchNet().to(DTYPE)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (net.bn, net.pool_bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.2, 0.2)
    net.eval()
    sites = {
        "edge": torch.tensor([0.9, 1.2], dtype=DTYPE),
        "op": torch.tensor([1.1, 0.7, -0.8, 1.3], dtype=DTYPE),
    }
    x = torch.randn(5, 2, 6, 6, dtype=DTYPE)
    y = torch.tensor([0, 1, 2, 3, 1])

    def forward(s, xb):
        return net(xb, s["edge"], s["op"])

    return net, forward, sites, x, y


def _flat(sites):
    return torch.cat([v.reshape(-1) for v in sites.values()])


def _unflat(vec, like):
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def _brute_ggn(forward, sites, x, y, likelihood, noise_std=1.0):
    """J^T Lambda J averaged over samples, with full Jacobians of the whole batch."""
    theta = _flat(sites)
    out = forward(sites, x)
    jac = jacrev(lambda t: forward(_unflat(t, sites), x))(theta)  # (batch, *out, P)
    jac = jac.reshape(out.shape[0], -1, theta.numel())
    diag = torch.zeros_like(theta)
    for n in range(out.shape[0]):
        if likelihood == "categorical":
            p = torch.softmax(out[n], -1)
            lam = torch.diag(p) - torch.outer(p, p)
        else:
            lam = torch.eye(jac.shape[1], dtype=DTYPE) / noise_std**2
        diag += torch.diagonal(jac[n].T @ lam @ jac[n])
    return _unflat(diag / out.shape[0], sites)


def _brute_hessian(forward, sites, x, y, likelihood, noise_std=1.0):
    theta = _flat(sites)

    def loss(t):
        return per_sample_nll(forward(_unflat(t, sites), x), y, likelihood, noise_std).mean()

    return _unflat(torch.diagonal(hessian(loss)(theta)), sites)


def _assert_close(a, b, **kw):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], **kw)


def test_registry_has_the_three_backends():
    assert {"ggn", "fisher", "exact"} <= set(BACKENDS)


def test_linear_model_ggn_equals_exact_hessian_equals_brute_force():
    torch.manual_seed(0)
    x = torch.randn(7, 3, dtype=DTYPE)
    y = torch.randint(0, 4, (7,))
    sites = {"w": torch.randn(3, 4, dtype=DTYPE), "b": torch.randn(4, dtype=DTYPE)}

    def forward(s, xb):
        return xb @ s["w"] + s["b"]

    ggn = diagonal_curvature(forward, sites, [(x, y)], backend="ggn")
    exact = diagonal_curvature(forward, sites, [(x, y)], backend="exact")
    brute = _brute_ggn(forward, sites, x, y, "categorical")
    _assert_close(ggn, brute)
    # logits are linear in the sites, so the GGN is the Hessian
    _assert_close(exact, _brute_hessian(forward, sites, x, y, "categorical"))
    _assert_close(exact, ggn)
    # closed form for the bias: mean over samples of p (1 - p)
    p = torch.softmax(forward(sites, x), -1)
    torch.testing.assert_close(ggn["b"], (p * (1 - p)).mean(0))


def test_linear_gaussian_ggn_is_xtx_over_sigma2():
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=DTYPE)
    y = torch.randn(6, dtype=DTYPE)
    sites = {"w": torch.randn(3, dtype=DTYPE)}
    curv = diagonal_curvature(
        lambda s, xb: xb @ s["w"], sites, [(x, y)], likelihood="gaussian", noise_std=0.5
    )
    torch.testing.assert_close(curv["w"], (x**2).mean(0) / 0.25)


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_cnn_ggn_matches_brute_force(likelihood):
    net, forward, sites, x, y = _make_net()
    if likelihood == "gaussian":
        y = torch.randn(5, 4, dtype=DTYPE)
    ggn = diagonal_curvature(
        forward, sites, [(x, y)], likelihood=likelihood, noise_std=0.7, chunk_size=2
    )
    _assert_close(ggn, _brute_ggn(forward, sites, x, y, likelihood, 0.7))
    assert all((v >= 0).all() for v in ggn.values())


def test_cnn_exact_matches_torch_func_hessian():
    net, forward, sites, x, y = _make_net()
    exact = diagonal_curvature(forward, sites, [(x, y)], backend="exact")
    brute = _brute_hessian(forward, sites, x, y, "categorical")
    _assert_close(exact, brute)
    # the network is nonlinear in the switches: the Hessian differs from the GGN
    ggn = _brute_ggn(forward, sites, x, y, "categorical")
    assert not torch.allclose(exact["op"], ggn["op"], rtol=1e-3)


def test_cnn_fisher_expectation_is_ggn():
    net, forward, sites, x, y = _make_net()
    gen = torch.Generator().manual_seed(3)
    fisher = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=gen, num_samples=4000
    )
    ggn = _brute_ggn(forward, sites, x, y, "categorical")
    _assert_close(fisher, ggn, rtol=0.08, atol=1e-6)
    assert all((v >= 0).all() for v in fisher.values())
    # a single draw is a noisy but non-negative estimate; seeded runs repeat exactly
    one_a = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=torch.Generator().manual_seed(5)
    )
    one_b = diagonal_curvature(
        forward, sites, [(x, y)], backend="fisher", generator=torch.Generator().manual_seed(5)
    )
    _assert_close(one_a, one_b)


def test_gaussian_fisher_expectation_is_ggn():
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=DTYPE)
    sites = {"w": torch.randn(3, 2, dtype=DTYPE)}

    def forward(s, xb):
        return torch.tanh(xb @ s["w"])

    fisher = diagonal_curvature(
        forward, sites, [(x, torch.zeros(4, 2, dtype=DTYPE))], likelihood="gaussian",
        backend="fisher", noise_std=0.5, num_samples=6000,
        generator=torch.Generator().manual_seed(0),
    )
    ggn = _brute_ggn(forward, sites, x, None, "gaussian", 0.5)
    _assert_close(fisher, ggn, rtol=0.08, atol=1e-6)


@pytest.mark.parametrize("backend", ["ggn", "exact"])
def test_average_over_batches_equals_concatenated_batch(backend):
    net, forward, sites, x, y = _make_net()
    x2 = torch.randn(5, 2, 6, 6, dtype=DTYPE)
    y2 = torch.tensor([3, 2, 1, 0, 0])
    split = diagonal_curvature(forward, sites, [(x, y), (x2, y2)], backend=backend)
    joint = diagonal_curvature(
        forward, sites, [(torch.cat([x, x2]), torch.cat([y, y2]))], backend=backend
    )
    _assert_close(split, joint)
    # max_batches keeps only the first batch
    first = diagonal_curvature(forward, sites, [(x, y), (x2, y2)], backend=backend, max_batches=1)
    _assert_close(first, diagonal_curvature(forward, sites, [(x, y)], backend=backend))


def test_sum_reduction_multiplies_by_batch_size():
    net, forward, sites, x, y = _make_net()
    mean = diagonal_curvature(forward, sites, [(x, y)])
    total = diagonal_curvature(forward, sites, [(x, y)], reduction="sum")
    _assert_close(total, {k: 5 * v for k, v in mean.items()})


def test_module_is_switched_to_eval_and_restored():
    net, forward, sites, x, y = _make_net()
    ref = diagonal_curvature(forward, sites, [(x, y)])  # net in eval mode
    net.train()
    curv = diagonal_curvature(forward, sites, [(x, y)], module=net)
    _assert_close(curv, ref)
    assert net.training and net.bn.training
    # running statistics untouched
    net.eval()
    _assert_close(diagonal_curvature(forward, sites, [(x, y)]), ref)


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
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, affine=affine)).to(DTYPE)
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    if affine:
        with torch.no_grad():
            net[1].weight.normal_()
            net[1].bias.normal_()
    x = torch.randn(4, 2, 5, 5, dtype=DTYPE)
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
    net, forward, sites, x, y = _make_net()
    net.train()  # the backends switch to eval mode, then patch the batch norms

    def run(**options):
        return diagonal_curvature(
            forward, sites, [(x, y)], backend=backend, module=net,
            generator=torch.Generator().manual_seed(3), **options,
        )

    ref = run()
    _assert_close(run(affine_batch_norm=True), ref, rtol=1e-10, atol=1e-12)
    assert net.training and all("forward" not in m.__dict__ for m in net.modules())
