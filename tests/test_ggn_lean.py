"""The lean exact GGN (per-sample gradients through batch-expanded sites) against the ``ggn``
backend and against brute-force Jacobians (torch.func), in float64."""

import pytest
import torch
from torch import Tensor, nn
from torch.func import jacrev

from pyronas.inference.curvature import BACKENDS, diagonal_curvature
from pyronas.inference.ggn_lean import hessian_factor_columns, lean_ggn

DT = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _assert_dicts_close(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], **TOL)


def _flat(sites: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in sites.values()])


def _unflat(vec: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vec[i : i + v.numel()].reshape(v.shape)
        i += v.numel()
    return out


def _brute_ggn_matrix(forward, sites, x, likelihood, noise_std=1.0) -> Tensor:
    """1/B sum_n J_n^T Lambda_n J_n from the Jacobian of the whole batch's output."""
    theta = _flat(sites)
    out = forward(sites, x)
    jac = jacrev(lambda t: forward(_unflat(t, sites), x))(theta)
    jac = jac.reshape(out.shape[0], -1, theta.numel())  # (batch, out, D)
    total = torch.zeros(theta.numel(), theta.numel(), dtype=DT)
    for n in range(out.shape[0]):
        if likelihood == "categorical":
            p = torch.softmax(out[n], -1)
            lam = torch.diag(p) - torch.outer(p, p)
        else:
            lam = torch.eye(jac.shape[1], dtype=DT) / noise_std**2
        total += jac[n].T @ lam @ jac[n]
    return total / out.shape[0]


# --------------------------------------------------------------------------------------------
# tiny networks: batch norm in eval mode, a conv net, a search supernet


class GatedMLP(nn.Module):
    """Linear -> BatchNorm1d -> tanh, gated per feature by ``gate`` (hidden,), then a scalar
    ``scale`` and a linear head."""

    def __init__(self, d_in: int = 3, hidden: int = 4, out: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.head = nn.Linear(hidden, out)

    def forward(self, x: Tensor, gate: Tensor, scale: Tensor) -> Tensor:
        return self.head(scale * torch.tanh(gate * self.bn(self.lin(x))))


class GatedConv(nn.Module):
    """Conv + BatchNorm2d stem, two branches (conv, avg pool) gated by ``edge`` (2,) and mixed by
    ``op`` (2, 2), global mean pool and a linear head."""

    def __init__(self, c: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor, edge: Tensor, op: Tensor) -> Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        a = self.conv(edge[0] * h)
        b = nn.functional.avg_pool2d(edge[1] * h, 3, stride=1, padding=1)
        z = op[0, 0] * a + op[0, 1] * b + op[1, 0] * torch.tanh(a) * op[1, 1]
        return self.head(z.mean((2, 3)))


def _randomise_batch_norms(net: nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)


def _mlp_case():
    torch.manual_seed(2)
    net = GatedMLP().to(DT)
    _randomise_batch_norms(net)
    net.eval()
    sites = {
        "gate": torch.tensor([0.8, -1.1, 1.3, 0.5], dtype=DT),
        "scale": torch.tensor(1.2, dtype=DT),
    }
    x = torch.randn(7, 3, dtype=DT)

    def forward(s, xb):
        return net(xb, s["gate"], s["scale"])

    return net, forward, sites, x


def _conv_case():
    torch.manual_seed(3)
    net = GatedConv().to(DT)
    _randomise_batch_norms(net)
    net.eval()
    sites = {
        "edge": torch.tensor([0.9, 1.2], dtype=DT),
        "op": torch.tensor([[1.1, 0.7], [-0.8, 1.3]], dtype=DT),
    }
    x = torch.randn(5, 1, 5, 5, dtype=DT)

    def forward(s, xb):
        return net(xb, s["edge"], s["op"])

    return net, forward, sites, x


def _supernet_case():
    from pyronas.space import get_space
    from pyronas.supernet import SuperNet

    torch.manual_seed(4)
    net = SuperNet(get_space("bayesnas8"), C=2, layers=2, num_classes=3).double()
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        net(torch.randn(8, 1, 6, 6, dtype=DT), *net.init_switches())
    net.eval()
    e, o = net.init_switches()
    sites = {"edge_switch": e * (0.5 + torch.rand_like(e)), "op_switch": o * torch.rand_like(o)}
    x = torch.randn(3, 1, 6, 6, dtype=DT)

    def forward(s, xb):
        return net(xb, s["edge_switch"], s["op_switch"])

    return net, forward, sites, x


# --------------------------------------------------------------------------------------------
# the factor of the output Hessian


def test_factor_columns_reproduce_the_output_hessians():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=DT)
    q = torch.stack(list(hessian_factor_columns(logits, "categorical")), -1)  # (batch, C, C)
    p = torch.softmax(logits, -1)
    lam = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    torch.testing.assert_close(q @ q.transpose(-1, -2), lam, **TOL)

    means = torch.randn(3, 2, 2, dtype=DT)
    cols = list(hessian_factor_columns(means, "gaussian", noise_std=0.5))
    assert len(cols) == 4 and cols[0].shape == means.shape
    q = torch.stack([c.reshape(3, -1) for c in cols], -1)
    torch.testing.assert_close(q @ q.transpose(-1, -2), torch.eye(4, dtype=DT).expand(3, 4, 4) * 4)


# --------------------------------------------------------------------------------------------
# the diagonal equals the ggn backend; the matrix equals brute force


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_mlp_with_batch_norm_matches_ggn_and_brute_force(likelihood):
    net, forward, sites, x = _mlp_case()
    res = lean_ggn(forward, sites, x, likelihood, noise_std=0.7, module=net, full=True)
    ref = BACKENDS["ggn"](forward, sites, x, None, likelihood, 0.7, net)
    _assert_dicts_close(res.diagonal, ref)
    brute = _brute_ggn_matrix(forward, sites, x, likelihood, noise_std=0.7)
    torch.testing.assert_close(res.matrix, brute, **TOL)
    assert res.num_samples == 7


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_conv_net_matches_ggn_and_brute_force(likelihood):
    net, forward, sites, x = _conv_case()
    res = lean_ggn(forward, sites, x, likelihood, noise_std=1.3, module=net, full=True)
    ref = BACKENDS["ggn"](forward, sites, x, None, likelihood, 1.3, net)
    _assert_dicts_close(res.diagonal, ref)
    torch.testing.assert_close(
        res.matrix, _brute_ggn_matrix(forward, sites, x, likelihood, 1.3), **TOL
    )
    torch.testing.assert_close(torch.diagonal(res.matrix), _flat(res.diagonal), **TOL)


def test_supernet_matches_ggn_backend():
    net, forward, sites, x = _supernet_case()
    y = torch.tensor([0, 2, 1])
    lean = diagonal_curvature(forward, sites, [(x, y)], backend="ggn_lean", module=net)
    ref = diagonal_curvature(forward, sites, [(x, y)], backend="ggn", module=net)
    _assert_dicts_close(lean, ref)
    assert all(v.abs().sum() > 0 for v in lean.values())


def test_forward_declaring_batched_sites_is_called_directly():
    net, forward, sites, x = _conv_case()
    calls = []

    def batched(s, xb):  # sites (batch, *site_shape): sample n uses row n
        calls.append({k: tuple(v.shape) for k, v in s.items()})
        h = torch.relu(net.bn(net.stem(xb)))
        e = s["edge"][:, :, None, None, None]  # (batch, 2, 1, 1, 1)
        op = s["op"][:, :, :, None, None, None]  # (batch, 2, 2, 1, 1, 1)
        a = net.conv(e[:, 0] * h)
        b = nn.functional.avg_pool2d(e[:, 1] * h, 3, stride=1, padding=1)
        z = op[:, 0, 0] * a + op[:, 0, 1] * b + op[:, 1, 0] * torch.tanh(a) * op[:, 1, 1]
        return net.head(z.mean((2, 3)))

    batched.batched_sites = True  # type: ignore[attr-defined]
    res = lean_ggn(batched, sites, x, module=net, full=True)
    assert calls == [{"edge": (5, 2), "op": (5, 2, 2)}]
    ref = lean_ggn(forward, sites, x, module=net, full=True)
    _assert_dicts_close(res.diagonal, ref.diagonal)
    torch.testing.assert_close(res.matrix, ref.matrix, **TOL)


# --------------------------------------------------------------------------------------------
# backend plumbing


def test_backend_is_registered_and_restores_the_module():
    assert "ggn_lean" in BACKENDS
    net, forward, sites, x = _mlp_case()
    net.train()
    net.head.weight.requires_grad_(True)
    net.lin.bias.requires_grad_(False)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    lean = diagonal_curvature(forward, sites, batches, backend="ggn_lean", module=net)
    assert net.training and net.bn.training
    assert net.head.weight.requires_grad and not net.lin.bias.requires_grad
    net.lin.bias.requires_grad_(True)
    ref = diagonal_curvature(forward, sites, batches, backend="ggn", module=net)
    _assert_dicts_close(lean, ref)
    for v in sites.values():  # the sites are not touched
        assert not v.requires_grad and v.grad is None


def test_sites_the_output_ignores_get_zero_curvature():
    net, forward, sites, x = _mlp_case()
    sites = {**sites, "unused": torch.ones(2, 3, dtype=DT)}
    res = lean_ggn(forward, sites, x, module=net, full=True)
    assert torch.equal(res.diagonal["unused"], torch.zeros(2, 3, dtype=DT))
    assert torch.equal(res.matrix[-6:], torch.zeros(6, 11, dtype=DT))

    def constant(s, xb):
        return torch.zeros(xb.shape[0], 3, dtype=DT)

    res = lean_ggn(constant, sites, x, full=True)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in res.diagonal.values())
    assert torch.equal(res.matrix, torch.zeros(11, 11, dtype=DT))


def test_errors():
    net, forward, sites, x = _mlp_case()
    with pytest.raises(ValueError, match="likelihood"):
        lean_ggn(forward, sites, x, "poisson")
    with pytest.raises(ValueError, match="no sites"):
        lean_ggn(forward, {}, x)

    def bad(s, xb):
        return forward({k: v[0] for k, v in s.items()}, xb[:1])

    bad.batched_sites = True  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="batch size"):
        lean_ggn(bad, sites, x, module=net)
