"""Baseline strategies: DARTS genotype rule and gradients, random cells, smoke searches, cost."""

import csv
import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyronas.data import load_dataset
from pyronas.genotype import (
    Genotype,
    alive_mask,
    derive,
    from_nb201_string,
    load_genotype,
    nb201_dead_edges,
    to_nb201_string,
    validate,
)
from pyronas.nb201 import lookup
from pyronas.runs import RunFolderError
from pyronas.search import resolve_search_config
from pyronas.space import get_space
from pyronas.strategies import STRATEGIES, STRATEGY_DEFAULTS, search_cost_gpu_days
from pyronas.strategies.darts import alpha_switches, darts_arch_gradient, darts_genotype
from pyronas.strategies.harness import genotype_switches
from pyronas.strategies.random_search import sample_random_genotype
from pyronas.supernet import SuperNet

TINY = {
    "dataset": "digits",
    "train_size": 300,
    "channels": 4,
    "layers": 3,
    "batch_size": 50,
    "bn_batches": 1,
    "progress": False,
    "num_threads": 1,
}
OPS = get_space("darts").ops  # sep3 sep5 dil3 dil5 max avg skip


def _cfg(**extra):
    cfg = resolve_search_config(None, TINY)
    cfg.update({"search_epochs": 1, "num_candidates": 3, **extra})
    return cfg


# --------------------------------------------------------------------------------------------
# DARTS genotype rule


def _alpha_from_weights(weights):
    """Logits whose softmax is the given (normalised) weights."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    return torch.log(w / w.sum(-1, keepdim=True))


def test_darts_rule_on_hand_made_weights_darts_space():
    space = get_space("darts")  # 14 edges: node 2 <- 0,1; node 3 <- 0,1,2; node 4 <- 0..3; ...
    w = torch.full((2, 14, 8), 1.0)
    edge = {e: i for i, e in enumerate(space.edges["normal"])}
    # node 2: both edges kept (only two); strongest non-zero ops sep5 (from 0), skip (from 1)
    w[0, edge[(0, 2)], 1] = 5.0
    w[0, edge[(1, 2)], 6] = 4.0
    # node 3: the zero op is the largest weight of edge 0->3 (10/24), but its best non-zero
    # op (max_pool, 8/24) beats the best op of 1->3 (sep3, 3/10): DARTS ignores the zero op,
    # so 0->3 is kept with max_pool, beside 2->3 (dil3, 4/11)
    w[0, edge[(0, 3)], 7] = 10.0
    w[0, edge[(0, 3)], 4] = 8.0
    w[0, edge[(1, 3)], 0] = 3.0
    w[0, edge[(2, 3)], 2] = 4.0
    # node 4: 3->4 dil5 and 1->4 avg win over 0->4 and 2->4
    w[0, edge[(3, 4)], 3] = 9.0
    w[0, edge[(1, 4)], 5] = 8.0
    w[0, edge[(0, 4)], 0] = 2.0
    # node 5: ties everywhere -> the first two edges in switch order (0->5, 1->5), first op
    # reduce cell: node 2 takes sep3 from 0 and 1; every later node sep3 from its first two inputs
    w[1, :, 0] = 2.0
    g = darts_genotype(space, _alpha_from_weights(w))
    expected = Genotype(
        normal=[
            [("sep_conv_5x5", 0), ("skip_connect", 1)],
            [("max_pool_3x3", 0), ("dil_conv_3x3", 2)],
            [("avg_pool_3x3", 1), ("dil_conv_5x5", 3)],
            [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        ],
        normal_concat=[2, 3, 4, 5],
        reduce=[[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]] * 4,
        reduce_concat=[2, 3, 4, 5],
        space="darts",
    )
    assert g == expected


def test_darts_rule_properties_on_random_weights():
    """Every node: 2 distinct inputs, each with its best non-zero op, no weaker edge kept."""
    space = get_space("darts")
    gen = torch.Generator().manual_seed(3)
    alpha = torch.randn(2, 14, 8, generator=gen, dtype=torch.float64)
    weights = F.softmax(alpha, -1)
    g = darts_genotype(space, alpha)
    for t, cell_type in enumerate(space.cell_types):
        edges = space.edges[cell_type]
        for j, pairs in enumerate(g.cell(cell_type)):
            dst = 2 + j
            assert len(pairs) == 2 and len({src for _, src in pairs}) == 2
            incoming = [e for e, (_, d) in enumerate(edges) if d == dst]
            best = {e: float(weights[t, e, :7].max()) for e in incoming}
            kept = [edges.index((src, dst)) for _, src in pairs]
            for op, src in pairs:
                e = edges.index((src, dst))
                assert OPS[int(weights[t, e, :7].argmax())] == op
            assert min(best[e] for e in kept) >= max(
                (best[e] for e in incoming if e not in kept), default=-1.0
            )


def test_darts_rule_bayesnas8_keeps_both_edges_with_best_op():
    space = get_space("bayesnas8")  # every node has exactly two incoming edges
    gen = torch.Generator().manual_seed(0)
    alpha = torch.randn(2, 8, 8, generator=gen)
    alpha[..., 7] = 10.0  # the zero op wins everywhere: DARTS still ignores it
    g = darts_genotype(space, alpha)
    for t, cell_type in enumerate(space.cell_types):
        pairs = {(src, dst, op) for dst, node in enumerate(g.cell(cell_type), start=2)
                 for op, src in node}
        expected = {(src, dst, OPS[int(alpha[t, e, :7].argmax())])
                    for e, (src, dst) in enumerate(space.edges[cell_type])}
        assert pairs == expected


def test_darts_rule_nb201_takes_argmax_with_none_and_connectivity():
    space = get_space("nb201")  # edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3; ops skip c1 c3 avg
    w = torch.full((1, 6, 5), 1.0)
    w[0, 0, 2] = 5.0  # 0->1 conv3
    w[0, 1, 4] = 5.0  # 0->2 none
    w[0, 2, 4] = 5.0  # 1->2 none: node 2 has no input, so 2->3 is dropped
    w[0, 3, 4] = 5.0  # 0->3 none
    w[0, 4, 0] = 5.0  # 1->3 skip
    w[0, 5, 1] = 5.0  # 2->3 conv1 (dead: node 2 is removed)
    g = darts_genotype(space, _alpha_from_weights(w))
    assert g == Genotype(
        normal=[[("nor_conv_3x3", 0)], [], [("skip_connect", 1)]], normal_concat=[3],
        num_inputs=1, space="nb201",
    )
    # the benchmark's cell of the rule is the argmax of all 6 edges, the dead one included
    assert to_nb201_string(g) == (
        "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|nor_conv_1x1~2|"
    )
    assert nb201_dead_edges(g) == ((2, 3, "nor_conv_1x1"),)


def test_darts_rule_untied_averages_the_cells_of_a_type():
    space = get_space("darts")
    gen = torch.Generator().manual_seed(1)
    alpha = torch.randn(3, 14, 8, generator=gen, dtype=torch.float64)
    index = torch.tensor([0, 1, 0])
    mean = torch.stack([F.softmax(alpha[[0, 2]], -1).mean(0), F.softmax(alpha[1], -1)])
    assert darts_genotype(space, alpha, index) == darts_genotype(space, mean.log())
    with pytest.raises(ValueError, match="shape"):
        darts_genotype(space, alpha[..., :7])


def test_alpha_switches_mix_with_the_zero_op():
    alpha = torch.tensor([[[0.0, math.log(3.0)]]])  # one op and none: weights 1/4, 3/4
    s = alpha_switches(alpha)
    torch.testing.assert_close(s["op_switch"], torch.tensor([[[0.25]]]))
    torch.testing.assert_close(s["edge_switch"], torch.ones(1, 1))


# --------------------------------------------------------------------------------------------
# DARTS architecture gradients


@pytest.fixture(scope="module")
def tiny_problem():
    torch.manual_seed(0)
    space = get_space("bayesnas8")
    net = SuperNet(space, C=2, layers=3, num_classes=10, in_channels=1).double()
    splits = load_dataset("digits", seed=0, train_size=200)
    xt = torch.stack([splits.train[i][0] for i in range(8)]).double()
    yt = torch.tensor([splits.train[i][1] for i in range(8)])
    xs = torch.stack([splits.search[i][0] for i in range(8)]).double()
    ys = torch.tensor([splits.search[i][1] for i in range(8)])
    alpha = 0.3 * torch.randn(2, 8, 8, dtype=torch.float64)
    return net, alpha, (xt, yt), (xs, ys)


def test_first_order_gradient_is_the_search_loss_gradient(tiny_problem):
    net, alpha, train, search = tiny_problem
    grad, loss = darts_arch_gradient(net, alpha, train, search, unrolled=False)
    a = alpha.clone().requires_grad_(True)
    s = alpha_switches(a)
    ref = F.cross_entropy(net(search[0], s["edge_switch"], s["op_switch"]), search[1])
    (expected,) = torch.autograd.grad(ref, a)
    torch.testing.assert_close(grad, expected)
    assert loss == pytest.approx(float(ref.detach()))


def test_second_order_gradient_matches_the_exact_unrolled_gradient(tiny_problem):
    """Finite-difference Hessian-vector product vs autograd through the virtual SGD step."""
    net, alpha, (xt, yt), (xs, ys) = tiny_problem
    state = {k: v.clone() for k, v in net.state_dict().items()}
    lr, momentum, wd = 0.05, 0.9, 3e-4
    names = [n for n, _ in net.named_parameters()]
    gen = torch.Generator().manual_seed(5)
    buffers = {n: 0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
               for n, p in net.named_parameters()}
    # a small finite-difference radius: this 2-channel network has kinks and near-constant
    # batch-norm inputs that make the published 0.01 coarse on it
    grad, _ = darts_arch_gradient(net, alpha, (xt, yt), (xs, ys), unrolled=True, lr=lr,
                                  momentum=momentum, weight_decay=wd, momentum_buffers=buffers,
                                  fd_radius=1e-4)
    for k, v in net.state_dict().items():  # weights and batch-norm statistics untouched
        torch.testing.assert_close(v, state[k])

    # exact: d/dalpha L_search(w'(alpha), alpha) with autograd through the virtual step
    a = alpha.clone().requires_grad_(True)
    params = dict(net.named_parameters())
    copies = {n: b.clone() for n, b in net.named_buffers()}

    def loss(weights, x, y):
        s = alpha_switches(a)
        out = torch.func.functional_call(net, {**weights, **copies},
                                         (x, s["edge_switch"], s["op_switch"]))
        return F.cross_entropy(out, y)

    g = torch.autograd.grad(loss(params, xt, yt), list(params.values()), create_graph=True)
    w_prime = {n: params[n] - lr * (momentum * buffers[n] + gi + wd * params[n])
               for n, gi in zip(names, g, strict=True)}
    (exact,) = torch.autograd.grad(loss(w_prime, xs, ys), a)
    first, _ = darts_arch_gradient(net, alpha, (xt, yt), (xs, ys), unrolled=False)
    # the second-order correction is not negligible here, and the approximation finds it
    assert (exact - first).norm() > 1e-3 * exact.norm()
    assert (grad - exact).norm() < 1e-3 * exact.norm()


def test_second_order_with_zero_step_is_first_order(tiny_problem):
    net, alpha, train, search = tiny_problem
    first, _ = darts_arch_gradient(net, alpha, train, search, unrolled=False)
    second, _ = darts_arch_gradient(net, alpha, train, search, unrolled=True, lr=0.0)
    torch.testing.assert_close(second, first)


# --------------------------------------------------------------------------------------------
# random cells


def test_random_cells_are_darts_cells_with_uniform_ops():
    space = get_space("darts")
    rng = np.random.default_rng(0)
    counts = np.zeros(7)
    inputs = np.zeros(5)  # how often node 5 (inputs 0..4) takes each input
    for _ in range(300):
        g = sample_random_genotype(space, rng)
        validate(g)
        for cell_type in g.cell_types:
            for pairs in g.cell(cell_type):
                assert len(pairs) == 2 and pairs[0][1] != pairs[1][1]
                for op, _ in pairs:
                    counts[OPS.index(op)] += 1
        for _, src in g.normal[3]:
            inputs[src] += 1
    # 300 cells x 2 types x 8 pairs = 4800 ops: each op 1/7 (sd about 24)
    assert np.abs(counts - counts.sum() / 7).max() < 5 * np.sqrt(counts.sum() / 7)
    assert np.abs(inputs - 600 / 5).max() < 5 * np.sqrt(120)
    again = [sample_random_genotype(space, np.random.default_rng(7)) for _ in range(2)]
    assert again[0] == again[1]


def test_random_nb201_cells_are_connected():
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    seen = {sample_random_genotype(space, rng) for _ in range(100)}
    assert len(seen) > 50
    for g in seen:
        assert g.normal[2]  # the output node always has an input


def test_genotype_switches_select_exactly_the_cell():
    space = get_space("bayesnas8")
    net = SuperNet(space, C=2, layers=3)
    g = sample_random_genotype(space, np.random.default_rng(2))
    s = genotype_switches(space, g, net)
    assert (s["edge_switch"] == 1).all()
    assert int(s["op_switch"].sum()) == 16  # 2 cells x 4 nodes x 2 pairs
    assert derive(space, s["op_switch"].any(-1), s["op_switch"] > 0) == g
    untied = SuperNet(space, C=2, layers=3, tied=False)
    su = genotype_switches(space, g, untied)
    assert su["op_switch"].shape == (3, 8, 7)
    torch.testing.assert_close(su["op_switch"][1], s["op_switch"][1])  # cell 1 is a reduction
    assert alive_mask(space, g)[1].sum() == 16


# --------------------------------------------------------------------------------------------
# search cost


def test_search_cost_in_gpu_days():
    assert search_cost_gpu_days(86400.0, "cuda") == pytest.approx(1.0)
    assert search_cost_gpu_days(0.2 * 86400, torch.device("cuda:0")) == pytest.approx(0.2)
    assert search_cost_gpu_days(3600.0, "cpu") is None
    assert search_cost_gpu_days(3600.0, None) is None
    with pytest.raises(ValueError, match="seconds"):
        search_cost_gpu_days(-1.0, "cuda")


# --------------------------------------------------------------------------------------------
# smoke searches on digits


def _rows(path):
    return list(csv.DictReader(path.open()))


@pytest.fixture(scope="module")
def darts1_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("darts1") / "run"
    start = time.perf_counter()
    result = STRATEGIES["darts1"](_cfg(search_epochs=2), out)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("name", ["darts1", "darts2"])
def test_darts_smoke_search_writes_the_run_folder(name, darts1_run, tmp_path):
    result = darts1_run[0] if name == "darts1" else STRATEGIES[name](_cfg(), tmp_path / "run")
    epochs = 2 if name == "darts1" else 1
    out = result.out_dir
    for f in ("config.yaml", "metrics.csv", "metrics.json", "genotype.json", "alphas.pt",
              "cell_normal.png", "cell_reduce.png"):
        assert (out / f).is_file(), f
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 and float(r["seconds"]) > 0 for r in rows)
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    saved = torch.load(out / "alphas.pt", weights_only=False)
    assert saved["alpha"].shape == (2, 8, 8) and len(saved["history"]) == epochs
    assert saved["ops"][-1] == "none"
    # Adam moves each alpha by at most about arch_lr (1 - beta1) / sqrt(1 - beta2) = 16 arch_lr
    # per step (three steps per epoch here); the genotype is the alphas' DARTS cell
    if epochs == 2:
        step = (saved["history"][1] - saved["history"][0]).abs().max()
        assert 3e-4 < step < 3 * 16 * 3e-4
    space = get_space("bayesnas8")
    assert load_genotype(out / "genotype.json") == darts_genotype(space, saved["alpha"])
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["strategy"] == name and meta["search_device"] == "cpu"
    assert meta["unrolled"] == (name == "darts2")


def test_same_seed_same_darts_search(darts1_run, tmp_path):
    again = STRATEGIES["darts1"](_cfg(search_epochs=2), tmp_path / "again")
    torch.testing.assert_close(again.extra["alpha"], darts1_run[0].extra["alpha"])
    assert again.genotype == darts1_run[0].genotype


def test_search_cost_is_recorded(darts1_run):
    result, wall = darts1_run
    meta = json.loads((result.out_dir / "metrics.json").read_text())
    epoch_seconds = sum(float(r["seconds"]) for r in _rows(result.out_dir / "metrics.csv"))
    assert epoch_seconds < meta["search_seconds"] <= wall
    assert meta["search_seconds"] == pytest.approx(result.seconds)
    assert meta["search_gpu_days"] is None  # a CPU run has no GPU cost
    assert meta["device"] == "cpu"  # the key the retraining reads


def test_random_ws_smoke_search(tmp_path):
    result = STRATEGIES["random"](_cfg(num_candidates=4), tmp_path / "ws")
    out = result.out_dir
    assert result.strategy == "random-ws"
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["val_acc"]) <= 1.0
    cands = _rows(out / "candidates.csv")
    assert len(cands) == 4
    best = max(range(4), key=lambda i: (float(cands[i]["val_acc"]), -i))
    assert [int(c["selected"]) for c in cands] == [int(i == best) for i in range(4)]
    assert load_genotype(out / "genotype.json") == result.extra["candidates"][best][0]
    assert (out / "cell_normal.png").is_file()
    # the probe of the epoch rows is the first candidate
    # metrics.csv keeps 6 significant digits
    assert float(rows[0]["val_acc"]) == pytest.approx(result.extra["candidates"][0][1], abs=1e-6)
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["strategy"] == "random-ws" and meta["num_candidates"] == 4

    plain = STRATEGIES["random"](_cfg(random_mode="plain"), tmp_path / "plain")
    assert plain.strategy == "random-plain"
    assert plain.genotype == result.extra["candidates"][0][0]  # same seed, same first cell
    assert (plain.out_dir / "genotype.json").is_file()
    assert json.loads((plain.out_dir / "metrics.json").read_text())["strategy"] == "random-plain"
    other = STRATEGIES["random"](_cfg(random_mode="plain", seed=1), tmp_path / "plain1")
    assert other.genotype != plain.genotype


def test_random_plain_nb201(tmp_path):
    cfg = _cfg(random_mode="plain")
    cfg["space"] = "nb201"
    g = STRATEGIES["random"](cfg, tmp_path / "nb").genotype
    assert g.space == "nb201" and g.reduce is None
    # the run folder has the benchmark string of the cell and its NAS-Bench-201 entry
    arch = (tmp_path / "nb" / "genotype_nb201.txt").read_text().strip()
    assert arch == to_nb201_string(g) and arch.count("~") == 6
    entry = json.loads((tmp_path / "nb" / "nb201_lookup.json").read_text())
    assert entry["arch"] == arch and entry["index"] == lookup(arch).index


def test_random_nb201_cells_keep_their_benchmark_string():
    space = get_space("nb201")
    rng = np.random.default_rng(3)
    cells = [sample_random_genotype(space, rng) for _ in range(60)]
    assert all(c.nb201_string is not None for c in cells)
    assert any(nb201_dead_edges(c) for c in cells)  # none on an edge often leaves dead edges
    for c in cells:
        assert from_nb201_string(to_nb201_string(c)) == c


def test_bad_mode_and_existing_run_folder(darts1_run, tmp_path):
    with pytest.raises(ValueError, match="random_mode"):
        STRATEGIES["random"](_cfg(random_mode="grid"), tmp_path / "x")
    with pytest.raises(RunFolderError, match="already holds a darts1 search run, finished"):
        STRATEGIES["darts1"](_cfg(), darts1_run[0].out_dir)


class _Stopped(Exception):
    """Stands for a crash right after a checkpoint."""


def _stop_after_first_checkpoint(monkeypatch, module):
    save = module.save_epoch_checkpoint

    def save_then_stop(h, kind, epoch, **state):
        save(h, kind, epoch, **state)
        raise _Stopped

    monkeypatch.setattr(module, "save_epoch_checkpoint", save_then_stop)


def _numbers(out):
    """metrics.csv without the wall times."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in _rows(out / "metrics.csv")]


def test_darts_resumes_after_an_epoch_as_if_never_stopped(darts1_run, tmp_path, monkeypatch):
    from pyronas.strategies import darts

    out = tmp_path / "run"
    _stop_after_first_checkpoint(monkeypatch, darts)
    with pytest.raises(_Stopped):
        STRATEGIES["darts1"](_cfg(search_epochs=2), out)
    monkeypatch.undo()
    assert len(_rows(out / "metrics.csv")) == 1 and not (out / "genotype.json").exists()
    resumed = STRATEGIES["darts1"](_cfg(search_epochs=2, resume=True), out)
    full = darts1_run[0]
    assert torch.equal(resumed.extra["alpha"], full.extra["alpha"])
    assert (out / "genotype.json").read_bytes() == (full.out_dir / "genotype.json").read_bytes()
    assert _numbers(out) == _numbers(full.out_dir)
    with pytest.raises(RunFolderError, match="darts1 search, not a darts2"):
        STRATEGIES["darts2"](_cfg(search_epochs=2, resume=True), out)


def test_random_ws_resumes_after_an_epoch_as_if_never_stopped(tmp_path, monkeypatch):
    from pyronas.strategies import random_search

    full = STRATEGIES["random"](_cfg(search_epochs=2), tmp_path / "full")
    out = tmp_path / "run"
    _stop_after_first_checkpoint(monkeypatch, random_search)
    with pytest.raises(_Stopped):
        STRATEGIES["random"](_cfg(search_epochs=2), out)
    monkeypatch.undo()
    resumed = STRATEGIES["random"](_cfg(search_epochs=2, resume=True), out)
    assert [s for _, s in resumed.extra["candidates"]] == [s for _, s in full.extra["candidates"]]
    assert (out / "genotype.json").read_bytes() == (tmp_path / "full/genotype.json").read_bytes()
    assert _numbers(out) == _numbers(tmp_path / "full")
    assert (out / "candidates.csv").read_bytes() == (tmp_path / "full/candidates.csv").read_bytes()


def test_strategy_defaults_are_the_published_darts_values():
    assert STRATEGY_DEFAULTS["arch_lr"] == 3e-4
    assert STRATEGY_DEFAULTS["arch_weight_decay"] == 1e-3
    assert STRATEGY_DEFAULTS["random_mode"] == "ws"


def test_random_ws_trains_only_the_sampled_paths(tmp_path):
    from pyronas.strategies import random_search
    from pyronas.strategies.harness import start_strategy

    cfg = _cfg(search_epochs=1)
    h = start_strategy(cfg, tmp_path / "ws", "random")
    net = h.net
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    probe = sample_random_genotype(h.space, np.random.default_rng(5))
    random_search._train_supernet(h, 1, probe, [])
    # replay the per-step draws of the training loop
    rng = h.seeds.numpy("paths")
    used = torch.zeros(h.space.switch_shapes()[1], dtype=torch.bool)
    for _ in h.loaders["train"]:
        used |= genotype_switches(h.space, sample_random_genotype(h.space, rng), net)[
            "op_switch"].cpu() != 0
    after = net.state_dict()
    changed = unchanged = 0
    for i, cell in enumerate(net.cells):
        t = int(net.cell_type_index[i])
        for e, edge in enumerate(cell.edges):
            for k, op in enumerate(edge.ops):
                names = [f"cells.{i}.edges.{e}.ops.{k}.{n}" for n, _ in op.named_parameters()]
                if not names:
                    continue  # pooling / skip: no weights
                moved = any(not torch.equal(before[n], after[n]) for n in names)
                assert moved == bool(used[t, e, k]), (i, e, k)
                changed += moved
                unchanged += not moved
    assert changed and unchanged
    assert net.num_live_ops() == sum(len(edge.ops) for c in net.cells for edge in c.edges)


def test_bayesnas_and_the_baselines_do_not_import_each_other():
    import subprocess
    import sys

    for module, other in (("pyronas.strategies", "pyronas.search"),
                          ("pyronas.search", "pyronas.strategies")):
        code = f"import sys, {module}; print({other!r} in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == "False", module
