"""Cell diagrams of genotypes.

Each cell type is drawn as a graph: cell inputs, intermediate nodes and the output, the ops on
the edges, and dashed arrows from the concatenated nodes to the output. An edge with several ops
is either several arrows, one labelled op each, or one arrow labelled with the list of its ops
(``group``; the default when some edge has more than :data:`GROUP_ABOVE` ops, as in the cells
BayesNAS finds). Graphviz's ``dot`` program draws it when it is on the PATH (we write the DOT
text and run ``dot``; no Python binding needed); otherwise matplotlib (Agg, no display) draws a
layered layout in which no two labels overlap and nothing leaves the canvas, node names set as
mathtext (``$c_{k-1}$``).

The matplotlib layout works in inches: one data unit is one inch of the figure, so text sizes
measured by the renderer are data sizes, and the figure is sized to what it holds.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from pyronas.genotype import Genotype, describe, from_nb201_string, load_genotype
from pyronas.space import node_name

log = logging.getLogger(__name__)

FORMATS = ("png", "svg")

GROUP_ABOVE = 2
"""``group=None`` groups the ops of an edge when some edge carries more ops than this."""

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

OUTPUT = -1
"""Node id of the cell output ``c_k``."""

NODE_SIZE, OP_SIZE, TITLE_SIZE = 11.0, 8.5, 12.0  # font sizes in points
PAD = 0.05  # inches of white around a label's text
GAP = 0.06  # inches between stacked op boxes


def math_label(name: str) -> str:
    """Mathtext of a node or edge name: ``c_{k-1}`` -> ``$c_{k-1}$``, ``n0`` -> ``$n_0$``,
    ``c_{k-2}->n0`` -> ``$c_{k-2} \\rightarrow n_0$``."""
    if "->" in name:
        src, dst = (math_label(part.strip()).strip("$") for part in name.split("->", 1))
        return f"${src} \\rightarrow {dst}$"
    match = re.fullmatch(r"([A-Za-z]+)(\d+)", name)
    if match:
        return f"${match[1]}_{{{match[2]}}}$"
    if "_{" in name:
        return f"${name}$"
    return name


@dataclass(frozen=True)
class CellGraph:
    """What one cell drawing shows.

    Attributes
    ----------
    names
        Node id -> display name (mathtext allowed), inputs first, then the intermediate nodes
        in order, then :data:`OUTPUT` when the output is drawn.
    num_inputs
        The first ``num_inputs`` entries of ``names`` are cell inputs.
    ops
        ``(src, dst, op, text)`` per op: the op's colour comes from ``op``, its label is
        ``text``.
    concat
        Nodes joined into the output (dashed arrows); empty: no output drawn.
    title
        Figure title.
    """

    names: dict[int, str]
    num_inputs: int
    ops: tuple[tuple[int, int, str, str], ...]
    concat: tuple[int, ...]
    title: str

    def max_ops_per_edge(self) -> int:
        """Most ops on one ``(src, dst)`` pair (0 without ops)."""
        counts: dict[tuple[int, int], int] = {}
        for src, dst, _, _ in self.ops:
            counts[src, dst] = counts.get((src, dst), 0) + 1
        return max(counts.values(), default=0)


def cell_graph(genotype: Genotype, cell_type: str) -> CellGraph:
    """The :class:`CellGraph` of one cell type: every op labelled with its name; removed
    nodes (no input) are left out."""
    n_in = genotype.num_inputs
    cell = genotype.cell(cell_type)
    names = {i: math_label(node_name(i, n_in)) for i in range(n_in)}
    names.update({n_in + j: math_label(node_name(n_in + j, n_in))
                  for j, pairs in enumerate(cell) if pairs})
    names[OUTPUT] = "$c_{k}$"
    ops = tuple((src, n_in + j, op, op) for j, pairs in enumerate(cell) for op, src in pairs)
    return CellGraph(names, n_in, ops, tuple(genotype.concat(cell_type)), f"{cell_type} cell")


def _group(graph: CellGraph, group: bool | None) -> bool:
    return graph.max_ops_per_edge() > GROUP_ABOVE if group is None else bool(group)


# --------------------------------------------------------------------------------------------
# graphviz


def _dot_label(name: str) -> str:
    """A graphviz HTML label of a (mathtext) node name: subscripts as ``<SUB>``."""
    plain = name.strip("$").replace("{", "").replace("}", "")
    if "_" in plain:
        base, sub = plain.split("_", 1)
        return f"<<I>{base}</I><SUB>{sub}</SUB>>"
    return f'"{plain}"'


def to_dot(genotype: Genotype, cell_type: str, group: bool | None = None) -> str:
    """DOT text of one cell type (left to right): one labelled edge per op, or with ``group``
    one edge per ``(src, dst)`` listing its ops (default: :data:`GROUP_ABOVE`)."""
    graph = cell_graph(genotype, cell_type)
    lines = [
        f'digraph "{cell_type}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node, name in graph.names.items():
        if node == OUTPUT:
            continue
        fill = "darkseagreen2" if node < graph.num_inputs else "lightblue"
        lines.append(f"  n{node} [label={_dot_label(name)}, fillcolor={fill}];")
    lines.append(f"  out [label={_dot_label(graph.names[OUTPUT])}, fillcolor=palegoldenrod];")
    if _group(graph, group):
        for (src, dst), ops in _edges(graph).items():
            label = "\\n".join(text for _, text in ops)
            width = 1 + 0.3 * len(ops)
            lines.append(f'  n{src} -> n{dst} [label="{label}", penwidth={width:.1f}];')
    else:
        for src, dst, op, text in graph.ops:
            color = OP_COLORS.get(op, "black")
            lines.append(f'  n{src} -> n{dst} [label="{text}", color="{color}"];')
    for c in graph.concat:
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


# --------------------------------------------------------------------------------------------
# matplotlib


def _edges(graph: CellGraph) -> dict[tuple[int, int], list[tuple[str, str]]]:
    """``(src, dst) -> [(op, text), ...]`` in op order."""
    edges: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for src, dst, op, text in graph.ops:
        edges.setdefault((src, dst), []).append((op, text))
    return edges


def _layers(graph: CellGraph) -> dict[int, int]:
    """Layer of every drawn node: inputs 0, a node 1 + the deepest of its inputs (1 without
    inputs), the output last."""
    layer = {node: 0 for node in list(graph.names)[: graph.num_inputs]}
    sources: dict[int, list[int]] = {}
    for src, dst, _, _ in graph.ops:
        sources.setdefault(dst, []).append(src)
    for node in graph.names:
        if node not in layer and node != OUTPUT:
            layer[node] = 1 + max((layer[s] for s in sources.get(node, []) if s in layer),
                                  default=0)
    if OUTPUT in graph.names:
        layer[OUTPUT] = 1 + max(layer.values())
    return layer


class _Measure:
    """Text sizes in inches from the Agg renderer."""

    def __init__(self) -> None:
        self.fig = Figure()
        self.renderer = FigureCanvasAgg(self.fig).get_renderer()
        self.sizes: dict[tuple[str, float], tuple[float, float]] = {}

    def __call__(self, text: str, size: float) -> tuple[float, float]:
        if (text, size) not in self.sizes:
            artist = self.fig.text(0, 0, text, fontsize=size)
            box = artist.get_window_extent(self.renderer)
            artist.remove()
            self.sizes[text, size] = (box.width / self.fig.dpi, box.height / self.fig.dpi)
        return self.sizes[text, size]


@dataclass
class _Box:
    """A drawn box: centre, size, text lines ``(text, colour)`` and line height (inches)."""

    x: float
    y: float
    width: float
    height: float
    lines: list[tuple[str, str]]
    line_height: float

    def rect(self) -> tuple[float, float, float, float]:
        w, h = self.width / 2, self.height / 2
        return (self.x - w, self.y - h, self.x + w, self.y + h)


def _spread(ys: list[float], heights: list[float], gap: float) -> list[float]:
    """Shift the centres ``ys`` (top to bottom) down as little as needed so that boxes of the
    given heights are ``gap`` apart, then centre the result on the mean of ``ys``."""
    out: list[float] = []
    for y, h in zip(ys, heights, strict=True):
        if out:
            y = min(y, out[-1] - heights[len(out) - 1] / 2 - gap - h / 2)
        out.append(y)
    shift = float(np.mean(ys) - np.mean(out)) if out else 0.0
    return [y + shift for y in out]


def cell_figure(graph: CellGraph, group: bool | None = None) -> Figure:
    """Matplotlib figure of one cell, left to right, the ops in boxes between the nodes.

    Nodes stand in layers (inputs, then each node one layer after its deepest input, then the
    output). Between two layers a column of op boxes: one per op, or with ``group`` one per
    ``(src, dst)`` listing its ops; a line runs from the source to the box and an arrow from
    the box to the destination. Boxes of one column are stacked, so no two texts overlap, and
    the figure is sized to hold everything.

    Parameters
    ----------
    graph
        What to draw (:func:`cell_graph`).
    group
        One box per ``(src, dst)`` listing its ops (``True``), one box per op (``False``), or
        ``None``: grouped when some edge has more than :data:`GROUP_ABOVE` ops.

    Returns
    -------
    Figure
        Sized to its content (one data unit = one inch), with an Agg canvas.
    """
    grouped = _group(graph, group)
    measure = _Measure()
    layer = _layers(graph)
    node_w = max(measure(name, NODE_SIZE)[0] for name in graph.names.values()) + 0.35
    node_h = max(measure(name, NODE_SIZE)[1] for name in graph.names.values()) + 0.2
    line_h = measure("Ag_", OP_SIZE)[1] + 0.03

    if grouped:
        blocks = [(src, dst, [(text, OP_COLORS.get(op, "black")) for op, text in ops])
                  for (src, dst), ops in _edges(graph).items()]
    else:
        blocks = [(src, dst, [(text, OP_COLORS.get(op, "black"))])
                  for src, dst, op, text in graph.ops]

    def box_of(lines: list[tuple[str, str]]) -> _Box:
        width = max(measure(t, OP_SIZE)[0] for t, _ in lines) + 2 * PAD
        return _Box(0.0, 0.0, width, len(lines) * line_h + 2 * PAD, lines, line_h)

    def node_box(node: int, x: float, y: float) -> _Box:
        return _Box(x, y, node_w, node_h, [(graph.names[node], "black")], node_h)

    nodes: dict[int, _Box] = {}
    n_layers = max(layer.values()) + 1
    inputs = [n for n in graph.names if layer[n] == 0]
    stack = max(
        (sum(box_of(lines).height + GAP for _, d, lines in blocks if layer[d] == lay)
         for lay in range(1, n_layers)), default=0.0)
    step = max(node_h + 0.5, stack / (len(inputs) + 1))
    for i, node in enumerate(inputs):
        nodes[node] = node_box(node, 0.0, ((len(inputs) - 1) / 2 - i) * step)
    op_boxes: list[tuple[int, int, _Box]] = []
    # an edge that skips layers passes each column in between through a reserved gap
    waypoints: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(blocks))}
    right = node_w / 2  # right edge of the last column drawn
    for lay in range(1, n_layers):
        members = [n for n in graph.names if layer[n] == lay]
        # (block index, box or None for a passing edge, the y it comes from)
        column: list[tuple[int, _Box | None, float]] = []
        for i, (s, d, lines) in enumerate(blocks):
            if layer[s] >= lay:
                continue
            src_y = waypoints[i][-1][1] if waypoints[i] else nodes[s].y
            if layer[d] == lay:
                column.append((i, box_of(lines), src_y))
            elif layer[s] < lay < layer[d]:
                column.append((i, None, src_y))
        # barycentre order: destinations by the mean height of their sources, then sources
        mean_src = {d: float(np.mean([y for i, b, y in column if b and blocks[i][1] == d]))
                    for d in members if any(b and blocks[i][1] == d for i, b, _ in column)}
        column.sort(key=lambda c: (-(mean_src[blocks[c[0]][1]] if c[1] else c[2]),
                                   members.index(blocks[c[0]][1]) if c[1] else 0, -c[2]))
        x_node = right + (0.9 if OUTPUT in members else 0.6) + node_w / 2
        if column:
            width = max((b.width for _, b, _ in column if b), default=0.3)
            x_box = right + 1.1 + width / 2
            heights = [b.height if b else 0.12 for _, b, _ in column]
            ys = _spread([y for _, _, y in column], heights, GAP)
            for (i, b, _), y in zip(column, ys, strict=True):
                if b is None:
                    waypoints[i] += [(x_box - width / 2, y), (x_box + width / 2, y)]
                else:
                    b.x, b.y = x_box, y
                    op_boxes.append((i, blocks[i][1], b))
            x_node = x_box + width / 2 + 0.55 + node_w / 2
        wanted = []
        for node in members:
            own = [b.y for _, d, b in op_boxes if d == node]
            if node == OUTPUT:
                own = [nodes[c].y for c in graph.concat if c in nodes] or [0.0]
            wanted.append(float(np.mean(own)) if own else 0.0)
        order = sorted(range(len(members)), key=lambda j: (-wanted[j], j))
        ys = _spread([wanted[j] for j in order], [node_h] * len(members), 0.35)
        for j, y in zip(order, ys, strict=True):
            nodes[members[j]] = node_box(members[j], x_node, y)
        right = x_node + node_w / 2

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    patches = {}
    for node, b in nodes.items():
        if node == OUTPUT:
            color = "#f3ecb0"
        else:
            color = "#cde8cd" if node in inputs else "#cfe3f3"
        x0, y0, _, _ = b.rect()
        patch = FancyBboxPatch((x0, y0), b.width, b.height, fc=color, ec="black", zorder=3,
                               boxstyle="round,pad=0,rounding_size=0.08")
        ax.add_patch(patch)
        patches[node] = patch
        ax.text(b.x, b.y, graph.names[node], ha="center", va="center", fontsize=NODE_SIZE,
                zorder=4)
    for i, dst, b in op_boxes:
        color = "#555555" if grouped else b.lines[0][1]
        width = 1.0 + (0.2 * len(b.lines) if grouped else 0.2)
        x0, y0, x1, y1 = b.rect()
        s = nodes[blocks[i][0]]
        line = [(s.x + s.width / 2, s.y), *waypoints[i], (x0, b.y)]
        ax.plot(*zip(*line, strict=True), color=color, lw=width, zorder=2,
                solid_capstyle="round", solid_joinstyle="round")
        ax.add_patch(FancyArrowPatch((x1, b.y), (nodes[dst].x, nodes[dst].y),
                                     patchB=patches[dst], shrinkA=0, arrowstyle="-|>",
                                     mutation_scale=12, color=color, lw=width, zorder=2))
        ax.add_patch(FancyBboxPatch((x0, y0), b.width, b.height, fc="white", ec=color,
                                    lw=0.8, zorder=5, boxstyle="round,pad=0,rounding_size=0.04"))
        top = y1 - PAD - line_h / 2
        for i, (text, tcolor) in enumerate(b.lines):
            ax.text(b.x, top - i * line_h, text, ha="center", va="center", fontsize=OP_SIZE,
                    color=tcolor, zorder=6)
    if OUTPUT in nodes:
        for c in graph.concat:
            if c in nodes:
                ax.add_patch(FancyArrowPatch((nodes[c].x, nodes[c].y),
                                             (nodes[OUTPUT].x, nodes[OUTPUT].y),
                                             patchA=patches[c], patchB=patches[OUTPUT],
                                             arrowstyle="-|>", mutation_scale=12, color="gray",
                                             ls="--", lw=1.0, zorder=1))
    rects = np.array([b.rect() for b in nodes.values()] + [b.rect() for _, _, b in op_boxes])
    xmin, ymin = rects[:, 0].min() - 0.25, rects[:, 1].min() - 0.25
    xmax, ymax = rects[:, 2].max() + 0.25, rects[:, 3].max() + 0.25
    title_w, title_h = measure(graph.title, TITLE_SIZE)
    ax.text((xmin + xmax) / 2, ymax + title_h / 2, graph.title, ha="center", va="center",
            fontsize=TITLE_SIZE)
    ymax += title_h + 0.15
    half = max(xmax - xmin, title_w + 0.4) / 2
    xmid = (xmin + xmax) / 2
    ax.set_xlim(xmid - half, xmid + half)
    ax.set_ylim(ymin, ymax)
    fig.set_size_inches(2 * half, ymax - ymin)
    return fig


def _draw_matplotlib(
    genotype: Genotype, cell_type: str, path: Path, fmt: str, group: bool | None = None
) -> None:
    fig = cell_figure(cell_graph(genotype, cell_type), group)
    fig.savefig(path, format=fmt, dpi=100)


def draw_genotype(
    genotype: Genotype,
    path: str | Path,
    fmt: str = "png",
    engine: str = "auto",
    group: bool | None = None,
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
    group
        One arrow per edge listing its ops (``True``), one arrow per op (``False``), or
        ``None``: grouped when some edge has more than :data:`GROUP_ABOVE` ops.

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
                _draw_dot(dot_exe, to_dot(genotype, cell_type, group), out, fmt)
            except (subprocess.SubprocessError, OSError) as err:
                if engine == "dot":
                    raise
                log.warning("dot failed (%s); drawing %s with matplotlib", err, out)
                _draw_matplotlib(genotype, cell_type, out, fmt, group)
        else:
            _draw_matplotlib(genotype, cell_type, out, fmt, group)
        log.info("wrote %s", out)
        written.append(out)
    return written


def show_genotype(
    name_or_path: str | Path,
    out_dir: str | Path | None = None,
    fmt: str = "png",
    nb201: str | Path | None = None,
    nb201_epochs: int = 12,
    group: bool | None = None,
) -> tuple[str, list[Path]]:
    """Load and validate a genotype, draw its cells, summarise it.

    Parameters
    ----------
    name_or_path
        A bundled name (``DARTS_V2``, ``BAYESNAS_0.01``, case-insensitive), a JSON file, a
        NAS-Bench-201 string, or a text file holding one (``genotype_nb201.txt``).
    out_dir
        Folder for the diagrams ``<stem>_<cell_type>.<fmt>``; ``None``: next to the genotype
        file, or the current folder for a bundled name or a string. The stem is the file's
        name, the bundled name, or ``nb201_<8 hex digits of the string's hash>``, so drawings of
        different genotypes do not overwrite each other.
    nb201, nb201_epochs
        Source of the NAS-Bench-201 lookup of an nb201 cell: an official benchmark file and its
        schedule (12 or 200), or ``None`` for the bundled 12-epoch table.
    group
        Passed to :func:`draw_genotype`.

    Returns
    -------
    summary, paths
        The :func:`~pyronas.genotype.describe` text (for an nb201 cell followed by its
        NAS-Bench-201 entry, or the reason it has none) and the written diagram files. Nothing
        is printed (the caller prints).
    """
    genotype, stem, folder = _load_shown(name_or_path)
    text = describe(genotype)
    if genotype.space == "nb201":
        from pyronas.nb201 import NB201Error, format_entry, open_table

        table = open_table(nb201, nb201_epochs)  # a bad source fails before anything is drawn
        try:
            text += "\n" + format_entry(table.lookup(genotype))
        except NB201Error as err:
            text += f"\nno NAS-Bench-201 entry: {err}"
    target = Path(out_dir) if out_dir is not None else folder
    paths = draw_genotype(genotype, target / stem, fmt=fmt, group=group)
    return text, paths


def _load_shown(name_or_path: str | Path) -> tuple[Genotype, str, Path]:
    """The genotype named by ``genotype show``'s argument, the stem of its drawings and their
    default folder (the file's, else the current one)."""
    import hashlib

    text = str(name_or_path)
    if text.lstrip().startswith("|"):
        digest = hashlib.sha1(text.strip().encode()).hexdigest()[:8]
        return from_nb201_string(text), f"nb201_{digest}", Path(".")
    path = Path(name_or_path)
    if path.is_file() and path.suffix != ".json":
        content = path.read_text(encoding="utf-8").strip()
        if content.startswith("|"):
            return from_nb201_string(content), path.stem, path.parent
    if path.is_file():
        return load_genotype(path), path.stem, path.parent
    return load_genotype(name_or_path), text, Path(".")
