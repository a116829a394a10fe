"""Genotypes: the discrete cells a search produces, as plain data.

A genotype lists, for every intermediate node of a cell, the ``(op, input)`` pairs that feed it.
Inputs use DARTS numbering: ``0 .. num_inputs - 1`` are the cell inputs (for two-input cells,
input 0 is the output of cell ``k - 2`` and input 1 that of cell ``k - 1``) and
``num_inputs + j`` is intermediate node ``j``. Several ops may come from one input (a multi-op
edge, summed in the evaluation network). A node may have no pairs at all if nothing uses it (a
node removed by the connectivity rule keeps its slot, so the numbering of later nodes holds).

Genotypes are stored as JSON (``pyronas-genotype/1``), never as Python source::

    {"format": "pyronas-genotype/1", "space": "darts", "num_inputs": 2,
     "normal": [[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [2, 3, 4, 5]}

``reduce`` and ``reduce_concat`` are ``null`` (or absent) for single-cell-type spaces (nb201).
The cell output is the channel concat of the ``*_concat`` nodes; a one-element concat (nb201:
the last node) is that node itself.

NAS-Bench-201 strings are kept losslessly: a cell read from a benchmark string
(:func:`from_nb201_string`) keeps that string in ``nb201_string`` (JSON field of the same name,
written only when set), and :func:`to_nb201_string` gives it back unchanged. The cell itself
follows the connectivity rule (edges out of nodes without input and nodes that do not reach the
output are dropped: pyronas's evaluation network does not compute them), while the benchmark
trained such *dead edges* (their batch norms still add a bias), so two strings that differ only
in dead edges are different benchmark entries; :func:`nb201_dead_edges` lists them.

The package, one job per module (each imports only those above it):

* :mod:`~pyronas.genotype.nodes`: a cell as plain node lists; the connectivity rule on them.
* :mod:`~pyronas.genotype.nb201_string`: the NAS-Bench-201 string, read and written losslessly.
* :mod:`~pyronas.genotype.cell`: the :class:`Genotype` type, its validation and canonical form.
* :mod:`~pyronas.genotype.io`: JSON, files and the bundled genotypes.
* :mod:`~pyronas.genotype.convert`: DARTS flat lists, NAS-Bench-201 strings and projections.
* :mod:`~pyronas.genotype.derivation`: masks to a connected genotype (:func:`derive`) and back.
* :mod:`~pyronas.genotype.summary`: the text summary (:func:`describe`).

Every public name is importable from ``pyronas.genotype`` itself.
"""

from pyronas.genotype.cell import Genotype, canonical, validate
from pyronas.genotype.convert import (
    from_darts,
    from_nb201_string,
    multi_op_edges,
    nb201_dead_edges,
    to_darts_pairs,
    to_darts_top2,
    to_nb201_projection,
    to_nb201_string,
)
from pyronas.genotype.derivation import alive_mask, apply_connectivity_rule, derive
from pyronas.genotype.io import (
    FORMAT,
    genotype_from_dict,
    genotype_to_dict,
    genotype_to_json,
    list_bundled,
    load_genotype,
    save_genotype,
)
from pyronas.genotype.nb201_string import format_nb201_string, parse_nb201_string
from pyronas.genotype.nodes import KNOWN_OPS, Cell, GenotypeError, Pair
from pyronas.genotype.summary import describe

__all__ = [
    "Cell",
    "FORMAT",
    "Genotype",
    "GenotypeError",
    "KNOWN_OPS",
    "Pair",
    "apply_connectivity_rule",
    "canonical",
    "derive",
    "describe",
    "format_nb201_string",
    "from_darts",
    "from_nb201_string",
    "genotype_from_dict",
    "genotype_to_dict",
    "genotype_to_json",
    "list_bundled",
    "alive_mask",
    "load_genotype",
    "multi_op_edges",
    "nb201_dead_edges",
    "parse_nb201_string",
    "save_genotype",
    "to_darts_pairs",
    "to_darts_top2",
    "to_nb201_projection",
    "to_nb201_string",
    "validate",
]
