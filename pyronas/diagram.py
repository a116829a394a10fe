"""Cell diagrams of genotypes.

Each cell type is drawn as a graph: cell inputs, intermediate nodes and the output, one arrow per
op labelled with the op (a multi-op edge is several arrows), and dashed arrows from the
concatenated nodes to the output. Graphviz's ``dot`` program draws it when it is on the PATH (we
write the DOT text and run ``dot``; no Python binding needed); otherwise matplotlib (Agg, no
display) draws a layered layout.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from pyronas.genotype import Genotype, describe, from_nb201_string, load_genotype

log = logging.getLogger(__name__)

FORMATS = ("png", "svg")

OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "dil_conv_3x3": "#9467bd",
    "dil_conv_5x5": "#e377c2",
    "max_pool_3x3": "#d62728",
    "avg_pool_3x3": "#ff7f0e",
    "skip_connect": "#2ca02c",
    "nor_conv_1x1": "#8c564b",
    "nor_conv_3x3": "#1f77b4",
}


def _labels(genotype: Genotype, cell_type: str) -> dict[int, str]:
    """Display name of every node (DARTS index), plus ``-1`` for the output."""
    n_in = genotype.num_inputs
    n_nodes = len(genotype.cell(cell_type))
    if n_in == 2:
        names = {0: "c_{k-2}", 1: "c_{k-1}"}
    else:
        names = {i: f"in{i}" for i in range(n_in)}
    names.update({n_in + j: str(j) for j in range(n_nodes)})
    names[-1] = "c_k"
    return names


def _drawn_nodes(genotype: Genotype, cell_type: str) -> list[int]:
    """Inputs and the intermediate nodes that have an input (removed nodes are not drawn)."""
    n_in = genotype.num_inputs
    cell = genotype.cell(cell_type)
    return list(range(n_in)) + [n_in + j for j, pairs in enumerate(cell) if pairs]


def to_dot(genotype: Genotype, cell_type: str) -> str:
    """DOT text of one cell type (left to right, one labelled edge per op)."""
    names = _labels(genotype, cell_type)
    n_in = genotype.num_inputs
    lines = [
        f'digraph "{cell_type}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node in _drawn_nodes(genotype, cell_type):
        fill = "darkseagreen2" if node < n_in else "lightblue"
        lines.append(f'  n{node} [label="{names[node]}", fillcolor={fill}];')
    lines.append(f'  out [label="{names[-1]}", fillcolor=palegoldenrod];')
    for j, pairs in enumerate(genotype.cell(cell_type)):
        for op, src in pairs:
            color = OP_COLORS.get(op, "black")
            lines.append(f'  n{src} -> n{n_in + j} [label="{op}", color="{color}"];')
    for c in genotype.concat(cell_type):
        lines.append(f"  n{c} -> out [style=dashed, color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _draw_dot(dot_exe: str, text: str, path: Path, fmt: str) -> None:
    subprocess.run(
        [dot_exe, f"-T{fmt}", "-o", str(path)],
        input=text.encode(),
        check=True,
        capture_output=True,
        timeout=60,
    )


def _layers(genotype: Genotype, cell_type: str) -> dict[int, int]:
    """Layer of every drawn node: inputs 0, a node 1 + the deepest of its inputs, output last."""
    n_in = genotype.num_inputs
    layer = {i: 0 for i in range(n_in)}
    for j, pairs in enumerate(genotype.cell(cell_type)):
        if pairs:
            layer[n_in + j] = 1 + max(layer[src] for _, src in pairs)
    layer[-1] = 1 + max(layer.values())
    return layer


def _draw_matplotlib(genotype: Genotype, cell_type: str, path: Path, fmt: str) -> None:
    names = _labels(genotype, cell_type)
    layer = _layers(genotype, cell_type)
    by_layer: dict[int, list[int]] = {}
    for node in sorted(layer, key=lambda n: (layer[n], n if n >= 0 else 10**9)):
        by_layer.setdefault(layer[node], []).append(node)
    dx, dy, w, h = 3.4, 1.6, 1.1, 0.5
    pos = {}
    for lay, nodes in by_layer.items():
        for i, node in enumerate(nodes):
            pos[node] = (lay * dx, (i - (len(nodes) - 1) / 2) * dy)
    n_layers = max(by_layer) + 1
    height = max(len(v) for v in by_layer.values())
    fig = Figure(figsize=(1.0 + 2.2 * n_layers, 1.5 + 1.1 * height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_aspect("equal")
    boxes = {}
    n_in = genotype.num_inputs
    for node, (x, y) in pos.items():
        color = "#cde8cd" if 0 <= node < n_in else ("#f3ecb0" if node < 0 else "#cfe3f3")
        box = FancyBboxPatch(
            (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc=color, ec="black"
        )
        ax.add_patch(box)
        boxes[node] = box
        ax.text(x, y, names[node], ha="center", va="center", fontsize=10, zorder=5)

    def arrow(src: int, dst: int, rad: float, **kw) -> None:
        patch = FancyArrowPatch(
            pos[src],
            pos[dst],
            patchA=boxes[src],
            patchB=boxes[dst],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=12,
            **kw,
        )
        ax.add_patch(patch)

    for j, pairs in enumerate(genotype.cell(cell_type)):
        dst = n_in + j
        by_src: dict[int, list[str]] = {}
        for op, src in pairs:
            by_src.setdefault(src, []).append(op)
        for src, ops in by_src.items():
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            skip = layer[dst] - layer[src] - 1  # bend edges that jump over layers
            for i, op in enumerate(ops):
                rad = (i - (len(ops) - 1) / 2) * 0.3 + 0.15 * skip
                color = OP_COLORS.get(op, "black")
                arrow(src, dst, rad, color=color, lw=1.2)
                # arc3 midpoint: chord midpoint + rad/2 * (dy, -dx)
                mx = (x1 + x2) / 2 + rad / 2 * (y2 - y1)
                my = (y1 + y2) / 2 - rad / 2 * (x2 - x1)
                ax.text(
                    mx, my, op, ha="center", va="center", fontsize=7, color=color, zorder=6,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85},
                )
    for c in genotype.concat(cell_type):
        arrow(c, -1, -0.15 * (layer[-1] - layer[c] - 1), color="gray", ls="--", lw=1.0)
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - w, max(xs) + w)
    ax.set_ylim(min(ys) - 1.2 * h - 0.4, max(ys) + 1.2 * h + 0.4)
    ax.set_title(f"{cell_type} cell", fontsize=11)
    fig.savefig(path, format=fmt, bbox_inches="tight")


def draw_genotype(
    genotype: Genotype, path: str | Path, fmt: str = "png", engine: str = "auto"
) -> list[Path]:
    """Draw every cell type of a genotype to ``<path>_<cell_type>.<fmt>``.

    Parameters
    ----------
    genotype
        The genotype.
    path
        File stem, e.g. ``run/cell`` gives ``run/cell_normal.png`` and ``run/cell_reduce.png``;
        a trailing ``.<fmt>`` is dropped. Parent folders are created.
    fmt
        ``"png"`` or ``"svg"``.
    engine
        ``"auto"`` (``dot`` when on the PATH, else matplotlib), ``"dot"`` or ``"matplotlib"``.

    Returns
    -------
    list of Path
        The written files, one per cell type.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown diagram format {fmt!r}; known: {', '.join(FORMATS)}")
    if engine not in ("auto", "dot", "matplotlib"):
        raise ValueError(f"unknown diagram engine {engine!r}; known: auto, dot, matplotlib")
    stem = Path(path)
    if stem.suffix == f".{fmt}":
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    dot_exe = shutil.which("dot") if engine in ("auto", "dot") else None
    if engine == "dot" and dot_exe is None:
        raise RuntimeError("graphviz 'dot' is not on the PATH; use engine='matplotlib'")
    written = []
    for cell_type in genotype.cell_types:
        out = stem.with_name(f"{stem.name}_{cell_type}.{fmt}")
        if dot_exe is not None:
            try:
                _draw_dot(dot_exe, to_dot(genotype, cell_type), out, fmt)
            except (subprocess.SubprocessError, OSError) as err:
                if engine == "dot":
                    raise
                log.warning("dot failed (%s); drawing %s with matplotlib", err, out)
                _draw_matplotlib(genotype, cell_type, out, fmt)
        else:
            _draw_matplotlib(genotype, cell_type, out, fmt)
        log.info("wrote %s", out)
        written.append(out)
    return written


def show_genotype(
    name_or_path: str | Path,
    out_dir: str | Path,
    fmt: str = "png",
    nb201: str | Path | None = None,
    nb201_epochs: int = 12,
) -> tuple[str, list[Path]]:
    """Load and validate a genotype, draw its cells into ``out_dir``, summarise it.

    Parameters
    ----------
    name_or_path
        A bundled name (``DARTS_V2``, ``BAYESNAS_0.01``, case-insensitive), a JSON file, a
        NAS-Bench-201 string, or a text file holding one (``genotype_nb201.txt``).
    out_dir
        Folder for the diagrams ``<name>_<cell_type>.<fmt>`` (``nb201_cell`` for a string).
    nb201, nb201_epochs
        Source of the NAS-Bench-201 lookup of an nb201 cell: an official benchmark file and its
        schedule (12 or 200), or ``None`` for the bundled 12-epoch table.

    Returns
    -------
    summary, paths
        The :func:`~pyronas.genotype.describe` text (for an nb201 cell followed by its
        NAS-Bench-201 entry, or the reason it has none) and the written diagram files. Nothing
        is printed (the caller prints).
    """
    genotype, stem = _load_shown(name_or_path)
    text = describe(genotype)
    if genotype.space == "nb201":
        from pyronas.nb201 import NB201Error, format_entry, open_table

        table = open_table(nb201, nb201_epochs)  # a bad source fails before anything is drawn
        try:
            text += "\n" + format_entry(table.lookup(genotype))
        except NB201Error as err:
            text += f"\nno NAS-Bench-201 entry: {err}"
    paths = draw_genotype(genotype, Path(out_dir) / stem, fmt=fmt)
    return text, paths


def _load_shown(name_or_path: str | Path) -> tuple[Genotype, str]:
    """The genotype named by ``genotype show``'s argument, and the stem of its drawings."""
    text = str(name_or_path)
    if text.lstrip().startswith("|"):
        return from_nb201_string(text), "nb201_cell"
    path = Path(name_or_path)
    if path.is_file() and path.suffix != ".json":
        content = path.read_text(encoding="utf-8").strip()
        if content.startswith("|"):
            return from_nb201_string(content), path.stem
    return load_genotype(name_or_path), path.stem if path.is_file() else text
