"""DARTS (Liu et al., ICLR 2019) on the shared supernet: first and second order.

Architecture weights ``alpha`` have shape ``(group, edge, op + 1)``: the space's non-zero ops in
switch order, then the zero op (``none``); ``group`` is the cell type (tied, the DARTS setting)
or the cell. An edge mixes its ops with ``softmax(alpha)``, so the supernet gets

    op_switch = softmax(alpha)[..., :op],   edge_switch = 1

(the zero op adds nothing to the sum; its weight only shrinks the others).

Bilevel optimisation, alternating per batch: an Adam step on ``alpha`` with the loss of a
``search``-split batch (lr ``arch_lr`` = 3e-4, betas (0.5, 0.999), weight decay
``arch_weight_decay`` = 1e-3), then an SGD step on the weights with the loss of a ``train``
batch (lr ``lr`` = 0.025 cosine-annealed to ``lr_min`` = 0.001 over ``search_epochs``, momentum
0.9, weight decay 3e-4, gradient norm clipped at 5). One epoch is one pass over the ``train``
split; the (smaller) ``search`` split is cycled.

First order (``darts1``): the architecture gradient is ``d L_search(w, alpha) / d alpha``.
Second order (``darts2``): the gradient of ``L_search(w', alpha)`` at the virtual step
``w' = w - xi * (momentum * m + dL_train/dw + weight_decay * w)`` (``xi`` the current weight
learning rate, ``m`` the SGD momentum buffer), i.e.

    dL_search(w', alpha)/dalpha - xi * [dL_train(w+, alpha)/dalpha - dL_train(w-, alpha)/dalpha]
                                       / (2 eps),

with ``w+- = w +- eps * dL_search(w', alpha)/dw'`` and ``eps = 0.01 / ||dL_search/dw'||`` (the
finite-difference Hessian-vector product).

Genotype rule (:func:`darts_genotype`): for two-input spaces, each intermediate node keeps the
``min(2, incoming edges)`` edges whose strongest non-zero op has the largest softmax weight, with
that op; for ``nb201``, each edge keeps its argmax op, ``none`` included, and the connectivity
rule drops dead nodes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pyronas.checkpoint import save_checkpoint
from pyronas.genotype import Genotype, derive
from pyronas.runs import compact_genotype
from pyronas.settings import SearchSettings, StrategySettings
from pyronas.space import SearchSpace
from pyronas.strategies.harness import (
    StrategyResult,
    cosine_lr,
    derive_one_op_per_edge,
    finish,
    resume_epoch_checkpoint,
    save_epoch_checkpoint,
    start_strategy,
)
from pyronas.supernet_eval import evaluate_supernet, recalibrate_batchnorm

log = logging.getLogger(__name__)

ARCH_BETAS = (0.5, 0.999)
"""Adam betas of the architecture step (published DARTS setting)."""

DARTS_DEFAULTS: dict[str, Any] = {
    key: getattr(StrategySettings(), key)
    for key in ("search_epochs", "arch_lr", "arch_weight_decay", "lr_min", "alpha_init_std")
}
"""The DARTS options of :class:`~pyronas.settings.StrategySettings` and their defaults (DARTS
published values; epochs: the digits demo budget of BayesNAS, ``t_max * epochs`` = 6; DARTS
used 50 on CIFAR-10)."""


# --------------------------------------------------------------------------------------------
# architecture weights -> switches -> genotype
# --------------------------------------------------------------------------------------------


def alpha_switches(alpha: Tensor) -> dict[str, Tensor]:
    """Supernet switches of architecture weights.

    Parameters
    ----------
    alpha
        ``(group, edge, op + 1)`` logits, last = the zero op.

    Returns
    -------
    dict
        ``op_switch = softmax(alpha)[..., :op]`` ``(group, edge, op)`` (differentiable in
        ``alpha``) and ``edge_switch`` ones ``(group, edge)``.
    """
    weights = F.softmax(alpha, dim=-1)
    return {
        "edge_switch": torch.ones(alpha.shape[:-1], dtype=alpha.dtype, device=alpha.device),
        "op_switch": weights[..., :-1],
    }


def _cell_type_weights(space: SearchSpace, alpha: Tensor, cell_type_index: Tensor | None
                       ) -> Tensor:
    weights = F.softmax(alpha.detach().double().cpu(), dim=-1)
    types = len(space.cell_types)
    if cell_type_index is None:
        if weights.shape[0] != types:
            raise ValueError(
                f"alpha has {weights.shape[0]} groups but space {space.name!r} has {types} cell "
                "types; pass cell_type_index for per-cell (untied) alphas"
            )
        return weights
    index = torch.as_tensor(cell_type_index).cpu()
    if len(index) != weights.shape[0]:
        raise ValueError(f"cell_type_index has {len(index)} cells, alpha {weights.shape[0]}")
    return torch.stack([weights[index == t].mean(0) for t in range(types)])


def darts_genotype(space: SearchSpace, alpha: Tensor, cell_type_index: Tensor | None = None
                   ) -> Genotype:
    """The DARTS discretisation of architecture weights.

    Parameters
    ----------
    space
        The search space.
    alpha
        ``(cell_type, edge, op + 1)`` logits (last = zero op), or ``(cell, edge, op + 1)`` with
        ``cell_type_index`` (untied: the softmax weights of the cells of a type are averaged).
    cell_type_index
        ``(cell,)`` cell type of each row of an untied ``alpha``.

    Returns
    -------
    Genotype
        Two-input spaces: per node, the ``min(2, incoming)`` incoming edges with the largest
        weight of their strongest non-zero op (ties: edge order), one op each; every node is
        concatenated. ``nb201``: per edge the argmax op including ``none``, connectivity rule.
    """
    expected = space.num_ops + 1
    if alpha.ndim != 3 or alpha.shape[1:] != (space.num_edges, expected):
        raise ValueError(
            f"alpha must have shape (group, {space.num_edges}, {expected}) for space "
            f"{space.name!r} (edge, ops + none), got {tuple(alpha.shape)}"
        )
    weights = _cell_type_weights(space, alpha, cell_type_index)
    if space.num_inputs == 1:
        choice = weights.argmax(-1)  # == num_ops means none
        return derive_one_op_per_edge(space, choice)
    best_weight, best_op = weights[..., :-1].max(-1)  # (cell_type, edge)
    alive_edge = torch.zeros(best_weight.shape, dtype=torch.bool)
    alive_op = torch.zeros(weights[..., :-1].shape, dtype=torch.bool)
    for t, cell_type in enumerate(space.cell_types):
        edges = space.edges[cell_type]
        for j in range(space.num_nodes):
            dst = space.num_inputs + j
            incoming = [e for e, (_, d) in enumerate(edges) if d == dst]
            ranked = sorted(incoming, key=lambda e: (-float(best_weight[t, e]), e))
            for e in ranked[: min(2, len(incoming))]:
                alive_edge[t, e] = True
                alive_op[t, e, best_op[t, e]] = True
    return derive(space, alive_edge, alive_op)


# --------------------------------------------------------------------------------------------
# the architecture gradient
# --------------------------------------------------------------------------------------------


def _loss(net: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
          y: Tensor, alpha: Tensor) -> Tensor:
    s = alpha_switches(alpha)
    logits = functional_call(net, {**params, **buffers}, (x, s["edge_switch"], s["op_switch"]))
    return F.cross_entropy(logits, y)


def _grads(loss: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads, strict=True)]


def darts_arch_gradient(
    net: nn.Module,
    alpha: Tensor,
    train_batch: tuple[Tensor, Tensor],
    search_batch: tuple[Tensor, Tensor],
    unrolled: bool,
    lr: float = 0.0,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    momentum_buffers: dict[str, Tensor] | None = None,
    fd_radius: float = 0.01,
) -> tuple[Tensor, float]:
    """The DARTS architecture gradient (first or second order) at the current weights.

    Parameters
    ----------
    net
        The supernet (its parameters are not changed; the extra forward passes of the second
        order run on copies of its batch-norm buffers).
    alpha
        ``(group, edge, op + 1)`` architecture logits.
    train_batch, search_batch
        ``(x, y)`` batches of the ``train`` and ``search`` splits (the first is used only when
        ``unrolled``).
    unrolled
        Second order: differentiate through one virtual SGD step of the weights.
    lr, momentum, weight_decay
        The weight optimiser's current step size ``xi``, momentum and weight decay.
    momentum_buffers
        Name -> SGD momentum buffer of each parameter (missing: zero).
    fd_radius
        Norm of the weight perturbation of the finite difference, ``eps * ||v||`` (DARTS:
        0.01). Central differences are exact up to ``O(fd_radius^2)`` for smooth losses, but
        ReLU / max-pool kinks and batch norms over few values can make 0.01 coarse on tiny
        networks.

    Returns
    -------
    (Tensor, float)
        The gradient, shape of ``alpha``, and the search loss (at ``w`` or ``w'``).
    """
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    w = {n: p.detach() for n, p in net.named_parameters() if p.requires_grad}
    alpha = alpha.detach().requires_grad_(True)
    xs, ys = search_batch
    if not unrolled:
        buffers = dict(net.named_buffers())  # batch norms update their statistics, as in DARTS
        loss = _loss(net, w, buffers, xs, ys, alpha)
        (grad,) = _grads(loss, [alpha])
        return grad, float(loss.detach())

    buffers = {n: b.clone() for n, b in net.named_buffers()}
    xt, yt = train_batch
    # virtual step w' = w - xi * (momentum * m + dL_train/dw + wd * w)
    w_req = {n: v.clone().requires_grad_(True) for n, v in w.items()}
    g_train = _grads(_loss(net, w_req, buffers, xt, yt, alpha.detach()), list(w_req.values()))
    buffers_m = momentum_buffers or {}
    w_prime = {}
    for n, g in zip(names, g_train, strict=True):
        step = g + weight_decay * w[n]
        if n in buffers_m:
            step = step + momentum * buffers_m[n]
        w_prime[n] = (w[n] - lr * step).requires_grad_(True)
    loss = _loss(net, w_prime, buffers, xs, ys, alpha)
    grads = _grads(loss, [alpha, *w_prime.values()])
    d_alpha, d_w = grads[0], grads[1:]
    norm = torch.sqrt(sum((g * g).sum() for g in d_w))
    eps = fd_radius / float(norm.clamp_min(1e-12))
    # finite-difference Hessian-vector product d^2 L_train / dalpha dw . d_w
    hvp_terms = []
    for sign in (1.0, -1.0):
        w_shift = {n: w[n] + sign * eps * g for n, g in zip(names, d_w, strict=True)}
        (g_alpha,) = _grads(_loss(net, w_shift, buffers, xt, yt, alpha), [alpha])
        hvp_terms.append(g_alpha)
    hvp = (hvp_terms[0] - hvp_terms[1]) / (2.0 * eps)
    return (d_alpha - lr * hvp).detach(), float(loss.detach())


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------


class SearchBatches:
    """The ``search`` split cycled, one batch per architecture step, on ``device``.

    Its position (the loader generator's state at the start of the current pass and the
    batches taken since) goes into the checkpoint, so that a resumed search continues the pass
    where it stopped (:meth:`state`, :meth:`restore`).
    """

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.pass_start: Tensor | None = None
        self.taken = 0
        self._batches: Iterator[tuple[Tensor, Tensor]] | None = None

    def _new_pass(self) -> None:
        self.pass_start = self.loader.generator.get_state()
        self.taken = 0
        self._batches = iter(self.loader)

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._batches is None:
            self._new_pass()
        assert self._batches is not None
        batch = next(self._batches, None)
        if batch is None:
            self._new_pass()
            batch = next(self._batches, None)
            if batch is None:
                raise ValueError("the search split is empty: DARTS needs it for the "
                                 "architecture steps")
        self.taken += 1
        x, y = batch
        return x.to(self.device), y.to(self.device)

    def state(self) -> dict[str, Any]:
        """Where the cycle stands: ``{"pass_start": generator state or None, "taken": int}``."""
        return {"pass_start": self.pass_start, "taken": self.taken}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (replays the current pass up to where it stood)."""
        if state["pass_start"] is None:
            return
        self.loader.generator.set_state(state["pass_start"])
        self.pass_start, self._batches = state["pass_start"], iter(self.loader)
        for _ in range(int(state["taken"])):
            next(self._batches)
        self.taken = int(state["taken"])


def run_darts(cfg: SearchSettings | Mapping[str, Any], out_dir: Any = None,
              unrolled: bool = False) -> StrategyResult:
    """Run a DARTS search with a resolved search config and write its run folder.

    Parameters
    ----------
    cfg
        Search settings (or a nested or flat mapping of them): the strategy section
        (:data:`DARTS_DEFAULTS`), data, supernet, training (``batch_size``, ``lr``,
        ``momentum``, ``weight_decay``, ``grad_clip``, ``bn_batches``) and run.
    out_dir
        Run folder (default ``run.out`` or ``runs/darts-<time>``).
    unrolled
        Second-order DARTS.

    Returns
    -------
    StrategyResult
        ``extra["alpha"]``: the final ``(group, edge, op + 1)`` logits.

    The run folder gets ``config.yaml``, ``metrics.csv`` (per epoch: ``epoch``, ``train_loss``,
    ``search_loss``, ``val_acc`` (supernet with the softmax mix, batch norms recalibrated),
    ``lr``, ``seconds`` (the weight and architecture steps of the epoch, evaluation excluded),
    ``genotype``), ``checkpoint.pt`` (after every epoch: ``--resume`` continues from it),
    ``alphas.pt``, ``genotype.json``, ``cell_*.png`` and ``metrics.json``.
    """
    strategy = "darts2" if unrolled else "darts1"
    h = start_strategy(cfg, out_dir, prefix=strategy)
    net, device, space = h.net, h.device, h.space
    train, options = h.settings.training, h.settings.strategy
    assert net is not None
    epochs = options.search_epochs
    _, op_shape = net.switch_shapes()
    alpha = (options.alpha_init_std * torch.randn(
        *op_shape[:-1], op_shape[-1] + 1, device=device, dtype=net.classifier.weight.dtype
    )).requires_grad_(True)
    weights = [p for p in net.parameters() if p.requires_grad]
    w_opt = torch.optim.SGD(weights, lr=train.lr, momentum=train.momentum,
                            weight_decay=train.weight_decay)
    a_opt = torch.optim.Adam([alpha], lr=options.arch_lr, betas=ARCH_BETAS,
                             weight_decay=options.arch_weight_decay)
    index = None if net.tied else net.cell_type_index
    search_batches = SearchBatches(h.loaders["search"], device)
    records: list[dict[str, Any]] = []
    history: list[Tensor] = []
    names = {p: n for n, p in net.named_parameters()}
    kind = f"pyronas-{strategy}-search/1"
    first = 0
    saved = resume_epoch_checkpoint(h, kind)
    if saved is not None:
        net.load_state_dict(saved["net"])
        with torch.no_grad():
            alpha.copy_(saved["alpha"])
        w_opt.load_state_dict(saved["weight_optimizer"])
        a_opt.load_state_dict(saved["arch_optimizer"])
        records, history = list(saved["records"]), list(saved["history"])
        search_batches.restore(saved["search_batches"])
        first = int(saved["epoch"])
    for epoch in range(first, epochs):
        lr = cosine_lr(train.lr, options.lr_min, epoch, epochs)
        for group in w_opt.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        train_total = search_total = 0.0
        count = 0
        net.train()
        for x, y in h.loaders["train"]:
            x, y = x.to(device), y.to(device)
            xs, ys = next(search_batches)
            buffers = None
            if unrolled:
                buffers = {names[p]: s["momentum_buffer"] for p, s in w_opt.state.items()
                           if s.get("momentum_buffer") is not None}
            grad, search_loss = darts_arch_gradient(
                net, alpha, (x, y), (xs, ys), unrolled, lr=lr, momentum=train.momentum,
                weight_decay=train.weight_decay, momentum_buffers=buffers,
            )
            a_opt.zero_grad(set_to_none=True)
            alpha.grad = grad
            a_opt.step()

            w_opt.zero_grad(set_to_none=True)
            s = alpha_switches(alpha.detach())
            loss = F.cross_entropy(net(x, s["edge_switch"], s["op_switch"]), y)
            loss.backward()
            if train.grad_clip:
                nn.utils.clip_grad_norm_(weights, train.grad_clip)
            w_opt.step()
            train_total += float(loss.detach())
            search_total += search_loss
            count += 1
        if count == 0:
            raise ValueError("the train split is empty: nothing to search on")
        seconds = time.perf_counter() - start

        sites = alpha_switches(alpha.detach())
        if train.bn_batches:
            recalibrate_batchnorm(
                net, sites, itertools.islice(h.loaders["train"], train.bn_batches), device
            )
        val_acc = evaluate_supernet(net, sites, h.loaders["val"], device)
        genotype = darts_genotype(space, alpha, index)
        row = {
            "epoch": epoch + 1, "train_loss": train_total / count,
            "search_loss": search_total / count, "val_acc": val_acc, "lr": lr,
            "seconds": seconds, "genotype": compact_genotype(genotype),
        }
        h.metrics.append(row)
        records.append(row)
        history.append(alpha.detach().cpu().clone())
        log.info("%s epoch %d/%d  train loss %.3f  val acc %.3f  %.1f s  genotype: %s",
                 strategy, epoch + 1, epochs, row["train_loss"], val_acc, seconds, row["genotype"])
        save_epoch_checkpoint(
            h, kind, epoch + 1, net=net.state_dict(), alpha=alpha.detach().cpu(),
            weight_optimizer=w_opt.state_dict(), arch_optimizer=a_opt.state_dict(),
            records=records, history=history, search_batches=search_batches.state(),
        )

    genotype = darts_genotype(space, alpha, index)
    save_checkpoint(
        {
            "format": "pyronas-darts-alphas/1",
            "space": space.name,
            "tied": net.tied,
            "ops": (*space.ops, "none"),
            "cell_type_index": net.cell_type_index.cpu(),
            "alpha": alpha.detach().cpu(),
            "history": history,
        },
        h.out / "alphas.pt",
    )
    result = finish(h, genotype, strategy, records, {"unrolled": unrolled})
    result.extra["alpha"] = alpha.detach().cpu()
    return result


def run_darts1(cfg: SearchSettings | Mapping[str, Any], out_dir: Any = None) -> StrategyResult:
    """First-order DARTS (see :func:`run_darts`)."""
    return run_darts(cfg, out_dir, unrolled=False)


def run_darts2(cfg: SearchSettings | Mapping[str, Any], out_dir: Any = None) -> StrategyResult:
    """Second-order DARTS (see :func:`run_darts`)."""
    return run_darts(cfg, out_dir, unrolled=True)


__all__ = [
    "DARTS_DEFAULTS",
    "SearchBatches",
    "alpha_switches",
    "darts_arch_gradient",
    "darts_genotype",
    "run_darts",
    "run_darts1",
    "run_darts2",
]
