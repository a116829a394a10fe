"""Layer-wise diagonal curvature: the "fast Hessian" of BayesNAS as a curvature backend.

The diagonal of the loss curvature is carried backwards through the network one operation at a
time, dropping every off-diagonal term at every intermediate tensor. For an operation
``y = f(x)`` with Jacobian ``A = dy/dx`` (per sample) and a diagonal curvature ``h_y`` at its
output, the curvature passed to its input is

    h_x[i] = sum_j A[j, i]^2 * h_y[j]

(the diagonal of ``A^T diag(h_y) A``; the second-derivative term ``f''(x) * dL/dy`` of the true
Hessian is dropped, as in a Gauss-Newton matrix: it vanishes for ReLU, max pooling and every
linear operation). The recursion starts from the diagonal of the Hessian of the negative log
likelihood with respect to the network output: ``p - p^2`` for a softmax, ``1 / sigma^2`` for a
Gaussian, divided by the batch size (curvature of the MEAN per-sample loss). The result is
non-negative, linear in the number of samples, and needs only what autograd already saved for
the backward pass: no feature map is cached.

Implementation: the forward runs once with autograd; the backward graph (``grad_fn`` nodes) is
then walked from the output to the sites in reverse topological order, restricted to the nodes
from which a site can be reached, and a rule is applied per node type:

* 0/1 Jacobians (ReLU, max pooling, views, reshapes, slicing, selection, concatenation, unbind,
  padding, expand, sums, copies): ``A^2 = A``, so the node's own backward applied to ``h_y`` is
  the rule.
* Element-wise unary operations (scaling by a constant, negation, smooth activations): ``A``
  is diagonal, ``h_x = a^2 * h_y`` with ``a`` the node's backward applied to ones.
* Products ``y = a * b`` (the switch product ``y = s * x``): ``h_a = b^2 * h_y``,
  ``h_b = a^2 * h_y``, each summed over the dimensions it was broadcast along (for a scalar
  switch, over samples, channels and positions).
* Sums of branches ``y = a + alpha * b``: ``h_a = h_y``, ``h_b = alpha^2 * h_y``.
* Convolutions of any dimension, stride, padding, dilation and groups (depthwise included), and
  transposed convolutions: the input rule is the convolution's input-gradient with squared
  weights ``W^2`` (a transposed convolution, the vectorised unfold / fold of the paper's
  "convolution as a fully connected layer"); the weight rule is its weight-gradient with the
  squared input, the bias rule a sum.
* Linear layers (``addmm``, ``mm``): ``h_x = h_y @ (W^2)``, ``h_W = (h_y)^T @ x^2``.
* Batch norm: an affine map per channel with slope ``weight / sqrt(var + eps)``, so
  ``h_x = slope^2 * h_y``. In eval mode ``var`` is the running variance (exact). In train mode it
  is the batch variance, and the dependence of the batch statistics on the samples is ignored
  (the statistics are treated as constants): that is the per-sample semantics the other backends
  use too when they evaluate in train mode, and it keeps samples independent.
* Average pooling (any kernel, stride, padding, ``ceil_mode``, ``count_include_pad``), global
  mean pooling and adaptive average pooling: every output ``j`` averages its window with one
  coefficient ``c_j``, so ``h_x = backward(c_j * h_y)``.

Any other node type raises ``NotImplementedError`` naming it.

The backend registers itself as ``"layerwise"`` in :data:`pyronas.inference.curvature.BACKENDS`
when this module is imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .curvature import BACKENDS, ForwardFn, eval_mode, register_backend

logger = logging.getLogger(__name__)

__all__ = [
    "layerwise_backend",
    "layerwise_curvature",
    "output_curvature",
    "supported_nodes",
]

Node = object
"""An autograd graph node (``tensor.grad_fn``)."""

Grads = list[Tensor | None]
"""Diagonal curvatures at a node's forward outputs (``None`` where none flows)."""


# --------------------------------------------------------------------------------------------
# node rules: (node, curvature at its forward outputs) -> curvature at its forward inputs,
# aligned with node.next_functions (None where the input needs none)


def _call(node: Node, grads: Grads) -> tuple[Tensor | None, ...]:
    """The node's own backward (vector-Jacobian product) applied to ``grads``."""
    out = node(*grads)  # type: ignore[operator]
    return out if isinstance(out, tuple) else (out,)


def _rule_selection(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """0/1 Jacobian: squaring changes nothing, the backward is the rule."""
    return _call(node, grads)


def _rule_elementwise(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Diagonal Jacobian ``a``: ``h_x = a^2 h_y`` with ``a = backward(ones)``."""
    (h,) = grads
    assert h is not None
    (slope,) = _call(node, [torch.ones_like(h)])[:1]
    assert slope is not None
    return (slope.square() * h,)


def _rule_mul(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """``y = a * b``: ``h_a = b^2 h_y``, ``h_b = a^2 h_y`` (broadcast sums done by the caller)."""
    (h,) = grads
    assert h is not None
    a = node._saved_self  # type: ignore[attr-defined]
    b = node._saved_other  # type: ignore[attr-defined]
    h_a = b.square() * h if need[0] else None
    h_b = a.square() * h if need[1] else None
    return (h_a, h_b)


def _rule_div(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """``y = a / b``: ``h_a = h_y / b^2``, ``h_b = a^2 / b^4 * h_y``."""
    (h,) = grads
    assert h is not None
    a = getattr(node, "_saved_self", None)
    b = node._saved_other  # type: ignore[attr-defined]
    h_a = h / b.square() if need[0] else None
    h_b = a.square() / b.square().square() * h if need[1] else None
    return (h_a, h_b)


def _rule_add(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """``y = a + alpha * b`` (or minus): ``h_a = h_y``, ``h_b = alpha^2 h_y``."""
    (h,) = grads
    assert h is not None
    alpha = float(getattr(node, "_saved_alpha", 1.0))
    return (h, h * alpha**2)


def _rule_conv(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Convolution: input-gradient with ``W^2``, weight-gradient with ``x^2``, bias sum."""
    (h,) = grads
    assert h is not None
    nexts = node.next_functions  # type: ignore[attr-defined]
    need = need + [False] * (3 - len(need))
    weight = node._saved_weight  # type: ignore[attr-defined]
    inp = node._saved_input  # type: ignore[attr-defined]
    stride = list(node._saved_stride)  # type: ignore[attr-defined]
    padding = list(node._saved_padding)  # type: ignore[attr-defined]
    dilation = list(node._saved_dilation)  # type: ignore[attr-defined]
    transposed = bool(node._saved_transposed)  # type: ignore[attr-defined]
    output_padding = list(node._saved_output_padding)  # type: ignore[attr-defined]
    groups = int(node._saved_groups)  # type: ignore[attr-defined]
    h_in = h_w = h_b = None
    if need[0]:
        if weight is None:
            raise RuntimeError("convolution node saved no weight; cannot propagate curvature")
        # the input tensor is needed for its shape only
        ref = inp if inp is not None else _shape_only(nexts[0])
        h_in = torch.ops.aten.convolution_backward(
            h, ref, weight.square(), None, stride, padding, dilation, transposed,
            output_padding, groups, [True, False, False],
        )[0]
    if need[1]:
        if inp is None:
            raise RuntimeError("convolution node saved no input; cannot propagate curvature")
        h_w = torch.ops.aten.convolution_backward(
            h, inp.square(), weight, None, stride, padding, dilation, transposed,
            output_padding, groups, [False, True, False],
        )[1]
    if need[2]:
        h_b = h.sum([d for d in range(h.dim()) if d != 1])
    return (h_in, h_w, h_b)[: len(nexts)]


def _shape_only(next_fn: tuple[Node | None, int]) -> Tensor:
    """A stride-0 tensor of the shape of a node's input (no memory): for shape arguments."""
    node, nr = next_fn
    meta = node._input_metadata[nr]  # type: ignore[union-attr]
    return torch.zeros((), dtype=meta.dtype, device=meta.device).expand(meta.shape)


def _rule_addmm(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """``y = beta * bias + alpha * mat1 @ mat2`` (a Linear layer)."""
    (h,) = grads
    assert h is not None
    alpha2 = float(getattr(node, "_saved_alpha", 1.0)) ** 2
    beta2 = float(getattr(node, "_saved_beta", 1.0)) ** 2
    mat1 = node._saved_mat1  # type: ignore[attr-defined]
    mat2 = node._saved_mat2  # type: ignore[attr-defined]
    h_bias = h * beta2 if need[0] else None
    h_1 = alpha2 * (h @ mat2.square().T) if need[1] else None
    h_2 = alpha2 * (mat1.square().T @ h) if need[2] else None
    return (h_bias, h_1, h_2)


def _rule_mm(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """``y = a @ b`` for matrices."""
    (h,) = grads
    assert h is not None
    a = node._saved_self  # type: ignore[attr-defined]
    b = node._saved_mat2  # type: ignore[attr-defined]
    h_a = h @ b.square().T if need[0] else None
    h_b = a.square().T @ h if need[1] else None
    return (h_a, h_b)


def _rule_batch_norm(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Per-channel affine map with slope ``weight / sqrt(var + eps)`` (see module docstring)."""
    h = grads[0]
    assert h is not None
    nexts = node.next_functions  # type: ignore[attr-defined]
    eps = float(getattr(node, "_saved_eps", getattr(node, "_saved_epsilon", 1e-5)))
    weight = getattr(node, "_saved_weight", None)
    invstd = getattr(node, "_saved_result2", None)  # 1 / sqrt(batch var + eps) in train mode
    training = getattr(node, "_saved_training", None)
    if training is None:  # cuDNN nodes keep no flag: batch statistics exist in train mode only
        training = invstd is not None and invstd.numel() > 0
    if training:
        if invstd is None or invstd.numel() == 0:
            raise RuntimeError(f"{type(node).__name__}: train-mode batch norm saved no statistics")
        scale2 = invstd.square()
    else:
        var = node._saved_running_var  # type: ignore[attr-defined]
        scale2 = 1.0 / (var + eps)
    if weight is not None:
        scale2 = scale2 * weight.square()
    shape = [1, -1] + [1] * (h.dim() - 2)
    h_in = h * scale2.reshape(shape) if need[0] else None
    if any(need[1:]):
        raise NotImplementedError(
            f"{type(node).__name__}: curvature with respect to batch-norm parameters"
        )
    return (h_in,) + (None,) * (len(nexts) - 1)


def _rule_mean(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Mean over ``n`` elements: coefficient ``1/n``, so ``h_x = backward(h_y) / n``."""
    (h,) = grads
    assert h is not None
    numel = int(node._saved_self_sym_numel)  # type: ignore[attr-defined]
    n = numel // max(h.numel(), 1)
    (g,) = _call(node, [h])
    assert g is not None
    return (g / n,)


def _rule_avg_pool(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Average pooling: ``h_x = backward(c * h_y)`` with ``c`` each window's coefficient."""
    (h,) = grads
    assert h is not None
    inp = node._saved_self  # type: ignore[attr-defined]
    dims = inp.dim() - 2
    pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
    kwargs = dict(
        kernel_size=node._saved_kernel_size,  # type: ignore[attr-defined]
        stride=node._saved_stride,  # type: ignore[attr-defined]
        padding=node._saved_padding,  # type: ignore[attr-defined]
        ceil_mode=node._saved_ceil_mode,  # type: ignore[attr-defined]
    )
    ones = torch.ones((1, 1, *inp.shape[2:]), dtype=h.dtype, device=h.device)
    divisor = node._saved_divisor_override  # type: ignore[attr-defined]
    weighted = pool(
        ones,
        count_include_pad=node._saved_count_include_pad,  # type: ignore[attr-defined]
        divisor_override=divisor,
        **kwargs,
    )
    counts = pool(ones, count_include_pad=True, divisor_override=1, **kwargs)
    coeff = weighted / counts  # (1, 1, *out): the weight of every input in each window
    return _call(node, [h * coeff])


def _rule_adaptive_avg_pool(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    """Adaptive average pooling: window ``j`` of size ``n_j`` has coefficient ``1/n_j``."""
    (h,) = grads
    assert h is not None
    inp = node._saved_self  # type: ignore[attr-defined]
    coeff = torch.ones((), dtype=h.dtype, device=h.device)
    spatial = inp.shape[2:]
    out_spatial = h.shape[2:]
    for axis, (n_in, n_out) in enumerate(zip(spatial, out_spatial, strict=True)):
        j = torch.arange(n_out, device=h.device)
        start = (j * n_in) // n_out
        end = ((j + 1) * n_in + n_out - 1) // n_out
        size = (end - start).to(h.dtype)
        shape = [1] * len(spatial)
        shape[axis] = n_out
        coeff = coeff * (1.0 / size).reshape(shape)
    return _call(node, [h * coeff])


def _rule_leaf(node: Node, grads: Grads, need: list[bool]) -> Sequence[Tensor | None]:
    return ()


Rule = Callable[[Node, Grads, list[bool]], Sequence[Tensor | None]]
"""(node, curvature at its outputs, which inputs need one) -> curvature at its inputs."""

_SELECTION = (
    "ReluBackward0", "ReluBackward1", "MaxPool1DWithIndicesBackward0",
    "MaxPool2DWithIndicesBackward0", "MaxPool3DWithIndicesBackward0",
    "AdaptiveMaxPool2DWithIndicesBackward0", "ViewBackward0", "ReshapeAliasBackward0",
    "UnsafeViewBackward0", "SelectBackward0", "SliceBackward0", "UnbindBackward0",
    "CatBackward0", "StackBackward0", "SplitBackward0", "SplitWithSizesBackward0",
    "ConstantPadNdBackward0", "ExpandBackward0", "SumBackward0", "SumBackward1",
    "CloneBackward0", "ToCopyBackward0", "AliasBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "PermuteBackward0",
    "TransposeBackward0", "TBackward0", "IndexBackward0", "IndexSelectBackward0",
    "FlattenBackward0", "NarrowBackward0", "ChunkBackward0", "RepeatBackward0",
)
_ELEMENTWISE = (
    "MulBackward1", "DivBackward1", "NegBackward0", "SigmoidBackward0", "TanhBackward0",
    "GeluBackward0", "SiluBackward0", "EluBackward0", "LeakyReluBackward0",
    "HardtanhBackward0", "SoftplusBackward0", "Relu6Backward0", "AbsBackward0",
)

RULES: dict[str, Rule] = {
    **{name: _rule_selection for name in _SELECTION},
    **{name: _rule_elementwise for name in _ELEMENTWISE},
    "MulBackward0": _rule_mul,
    "DivBackward0": _rule_div,
    "AddBackward0": _rule_add,
    "SubBackward0": _rule_add,
    "AddBackward1": _rule_selection,
    "SubBackward1": _rule_selection,
    "ConvolutionBackward0": _rule_conv,
    "AddmmBackward0": _rule_addmm,
    "MmBackward0": _rule_mm,
    "NativeBatchNormBackward0": _rule_batch_norm,
    "CudnnBatchNormBackward0": _rule_batch_norm,
    "MiopenBatchNormBackward0": _rule_batch_norm,
    "NativeBatchNormLegitBackward0": _rule_batch_norm,
    "MeanBackward0": _rule_mean,
    "MeanBackward1": _rule_mean,
    "AvgPool2DBackward0": _rule_avg_pool,
    "AvgPool3DBackward0": _rule_avg_pool,
    "AdaptiveAvgPool1DBackward0": _rule_adaptive_avg_pool,
    "AdaptiveAvgPool2DBackward0": _rule_adaptive_avg_pool,
    "AdaptiveAvgPool3DBackward0": _rule_adaptive_avg_pool,
    "AccumulateGrad": _rule_leaf,
}
"""Curvature rule of every supported autograd node type, by class name."""


def supported_nodes() -> list[str]:
    """Names of the autograd node types the recursion has a rule for."""
    return sorted(RULES)


# --------------------------------------------------------------------------------------------
# graph walk


def _sum_to(h: Tensor, shape: torch.Size) -> Tensor:
    """Sum ``h`` over the dimensions along which a tensor of ``shape`` was broadcast."""
    if h.shape == shape:
        return h
    lead = h.dim() - len(shape)
    dims = list(range(lead)) + [
        lead + i for i, n in enumerate(shape) if n == 1 and h.shape[lead + i] != 1
    ]
    out = h.sum(dims, keepdim=True) if dims else h
    return out.reshape(shape) if lead else out


def _graph(root: Node, leaf_ids: Mapping[int, str]) -> tuple[dict[int, Node], dict[int, str]]:
    """All nodes of the graph below ``root`` by id (the dict keeps them alive, so ids stay
    unique), and the AccumulateGrad nodes of the wanted leaves (their ``.variable``)."""
    nodes: dict[int, Node] = {}
    targets: dict[int, str] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in nodes:
            continue
        nodes[id(node)] = node
        var = getattr(node, "variable", None)
        if var is not None and id(var) in leaf_ids:
            targets[id(node)] = leaf_ids[id(var)]
        stack.extend(n for n, _ in node.next_functions if n is not None)  # type: ignore[attr-defined]
    return nodes, targets


def _relevant_nodes(root: Node, targets: Mapping[int, str]) -> set[int]:
    """Ids of the nodes from which a target node can be reached (iterative post-order DFS;
    graphs can be thousands of nodes deep)."""
    reach: dict[int, bool] = {}
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        children = [n for n, _ in node.next_functions if n is not None]  # type: ignore[attr-defined]
        if expanded:
            reach[key] = key in targets or any(reach[id(n)] for n in children)
            continue
        if key in reach:
            continue
        reach[key] = False  # provisional until expanded: the graph is acyclic
        stack.append((node, True))
        stack.extend((n, False) for n in children if id(n) not in reach)
    return {k for k, v in reach.items() if v}


def output_curvature(
    output: Tensor, likelihood: str, noise_std: float = 1.0
) -> Tensor:
    """Diagonal Hessian of the mean per-sample NLL with respect to the network output.

    Parameters
    ----------
    output : Tensor
        (batch, class) logits, or (batch, ...) Gaussian means.
    likelihood : {"categorical", "gaussian"}
    noise_std : float
        Gaussian standard deviation.

    Returns
    -------
    Tensor
        Output-shaped: ``(p - p^2) / batch`` (softmax diagonal; the off-diagonal ``-p_c p_d``
        terms are dropped) or ``1 / (sigma^2 batch)``.
    """
    batch = output.shape[0]
    if likelihood == "categorical":
        p = torch.softmax(output.detach(), dim=-1)
        return (p - p.square()) / batch
    if likelihood == "gaussian":
        return torch.full_like(output.detach(), 1.0 / (noise_std**2 * batch))
    raise ValueError(f"unknown likelihood {likelihood!r}; expected 'categorical' or 'gaussian'")


def layerwise_curvature(
    output: Tensor, leaves: Mapping[str, Tensor], output_hessian: Tensor
) -> dict[str, Tensor]:
    """Propagate a diagonal output curvature back to leaf tensors through autograd's graph.

    Parameters
    ----------
    output : Tensor
        A tensor computed from ``leaves`` with autograd recording.
    leaves : Mapping[str, Tensor]
        Leaf tensors (``requires_grad=True``, no ``grad_fn``), e.g. architecture switches or
        weights.
    output_hessian : Tensor
        Diagonal curvature at ``output`` (output-shaped, non-negative).

    Returns
    -------
    dict[str, Tensor]
        Diagonal curvature of each leaf, leaf-shaped (zeros for leaves ``output`` ignores).

    Raises
    ------
    NotImplementedError
        When the graph between ``output`` and the leaves holds a node without a rule.
    """
    result = {k: torch.zeros_like(v).detach() for k, v in leaves.items()}
    root = output.grad_fn
    if root is None:
        return result
    for name, leaf in leaves.items():
        if leaf.grad_fn is not None or not leaf.requires_grad:
            raise ValueError(f"site {name!r} must be a leaf tensor that requires grad")
    nodes, targets = _graph(root, {id(v): k for k, v in leaves.items()})
    relevant = _relevant_nodes(root, targets)
    if id(root) not in relevant:
        return result
    # number of relevant consumers of every relevant node: a node runs after all of them
    indegree: dict[int, int] = dict.fromkeys(relevant, 0)
    for key in relevant:
        for n, _ in nodes[key].next_functions:  # type: ignore[attr-defined]
            if n is not None and id(n) in relevant:
                indegree[id(n)] += 1

    pending: dict[int, Grads] = {id(root): [None] * len(root._input_metadata)}
    pending[id(root)][output.output_nr] = output_hessian.detach()
    ready = [root]
    while ready:
        node = ready.pop()
        key = id(node)
        grads = pending.pop(key)
        name = type(node).__name__
        if key in targets:
            h = grads[0]
            if h is not None:
                site = targets[key]
                result[site] = result[site] + _sum_to(h, result[site].shape)
            continue
        rule = RULES.get(name)
        if rule is None:
            raise NotImplementedError(
                f"layerwise curvature has no rule for autograd node {name}; supported: "
                f"{', '.join(supported_nodes())}"
            )
        need = [n is not None and id(n) in relevant for n, _ in node.next_functions]
        with torch.no_grad():
            outs = rule(node, grads, need)
        for i, (nxt, nr) in enumerate(node.next_functions):
            if nxt is None or id(nxt) not in relevant:
                continue
            h = outs[i] if i < len(outs) else None
            if h is not None:
                meta = nxt._input_metadata[nr]
                h = _sum_to(h, meta.shape)
                slots = pending.setdefault(id(nxt), [None] * len(nxt._input_metadata))
                slots[nr] = h if slots[nr] is None else slots[nr] + h
            indegree[id(nxt)] -= 1
            if indegree[id(nxt)] == 0:
                pending.setdefault(id(nxt), [None] * len(nxt._input_metadata))
                if all(g is None for g in pending[id(nxt)]):
                    pending.pop(id(nxt))  # nothing flows: skip the node and its inputs
                    _release(nxt, relevant, indegree, pending, ready)
                else:
                    ready.append(nxt)
    return result


def _release(
    node: Node,
    relevant: set[int],
    indegree: dict[int, int],
    pending: dict[int, Grads],
    ready: list[Node],
) -> None:
    """Mark the inputs of a node that received no curvature as done (iteratively)."""
    stack = [node]
    while stack:
        cur = stack.pop()
        for nxt, _ in cur.next_functions:  # type: ignore[attr-defined]
            if nxt is None or id(nxt) not in relevant:
                continue
            indegree[id(nxt)] -= 1
            if indegree[id(nxt)] == 0:
                if id(nxt) in pending and any(g is not None for g in pending[id(nxt)]):
                    ready.append(nxt)
                else:
                    pending.pop(id(nxt), None)
                    stack.append(nxt)


# --------------------------------------------------------------------------------------------
# backend


def layerwise_backend(
    forward: ForwardFn,
    sites: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    likelihood: str,
    noise_std: float,
    module: nn.Module | None,
    **_: object,
) -> dict[str, Tensor]:
    """Layer-wise diagonal curvature of the mean NLL of one batch (see the module docstring).

    One forward pass with autograd recording, then one walk of the backward graph; ``y`` is not
    used (the curvature of these likelihoods does not depend on the labels). The network is in
    eval mode when ``module`` is given (as for the other backends); in train mode the batch-norm
    statistics are treated as constants.
    """
    leaves = {k: v.detach().requires_grad_(True) for k, v in sites.items()}
    with eval_mode(module), torch.enable_grad():
        output = forward(leaves, x)
        hess = output_curvature(output, likelihood, noise_std)
        curv = layerwise_curvature(output, leaves, hess)
    return curv


if "layerwise" not in BACKENDS:
    register_backend("layerwise", layerwise_backend)
