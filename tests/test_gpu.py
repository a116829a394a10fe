"""CUDA paths: curvature agrees with the CPU, and a search and a retraining run end to end.

Marked ``gpu`` (excluded by default); run with ``pytest -m gpu`` on a machine with CUDA.
"""

import pytest
import torch

from pyronas.config import load_config
from pyronas.genotype import validate
from pyronas.search import resolve_search_config, run_search
from pyronas.space import get_space
from pyronas.supernet import SuperNet
from pyronas.train import retrain

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _curvature(device: str) -> dict[str, torch.Tensor]:
    from pyronas.inference.curvature import diagonal_curvature

    torch.manual_seed(0)
    space = get_space("bayesnas8")
    net = SuperNet(space, C=4, layers=3, num_classes=10, in_channels=1).double().eval()
    edge_shape, op_shape = space.switch_shapes()
    sites = {"edge_switch": torch.ones(edge_shape, dtype=torch.float64),
             "op_switch": torch.ones(op_shape, dtype=torch.float64)}
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(6) % 10
    net = net.to(device)
    sites = {k: v.to(device) for k, v in sites.items()}

    def forward(s, inputs):
        return net(inputs, s["edge_switch"], s["op_switch"])

    out = diagonal_curvature(forward, sites, [(x.to(device), y.to(device))], backend="ggn",
                             module=net)
    return {k: v.cpu() for k, v in out.items()}


def test_curvature_on_cuda_matches_cpu():
    cpu, gpu = _curvature("cpu"), _curvature("cuda")
    for name in cpu:
        torch.testing.assert_close(gpu[name], cpu[name], rtol=1e-6, atol=1e-9)


def test_search_runs_on_cuda(tmp_path):
    cfg = resolve_search_config(None, {
        "dataset": "digits", "train_size": 300, "channels": 4, "layers": 3, "batch_size": 50,
        "t_max": 2, "curvature_batches": 1, "bn_batches": 1, "posterior_draws": 3,
        "progress": False, "device": "cuda", "out": str(tmp_path / "s")})
    result = run_search(cfg)
    validate(result.genotype)
    assert (tmp_path / "s" / "posterior.nc").exists()


@pytest.mark.parametrize("speed", [{}, {"channels_last": True}, {"amp_dtype": "bfloat16"}])
def test_retrain_runs_on_cuda_with_each_speed_option(tmp_path, speed):
    cfg = load_config("retrain_digits", {"genotype": "DARTS_V2", "train_size": 300, "C": 4,
                                         "layers": 3, "epochs": 1, "device": "cuda",
                                         "progress": False, **speed})
    metrics = retrain(cfg, tmp_path / "r")
    assert metrics["device"].startswith("cuda")
    assert 0.0 <= metrics["test_acc"] <= 100.0
