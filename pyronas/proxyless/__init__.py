"""Proxyless search: BayesNAS over tree-structured cells inside a PyramidNet backbone.

* :mod:`.tree_ops` - the edge operations of tree cells;
* :mod:`.tree` - tree cells as data (the ``pyronas-tree/1`` JSON, TreeCell-A, the template);
* :mod:`.tree_cell` - tree cells as modules (evaluation and searchable);
* :mod:`.pyramidnet` - the bottleneck PyramidNet with a tree cell per block, and its supernet;
* :mod:`.space` - the search space of the supernet and the derivation of tree cells;
* :mod:`.search` - the search run.
"""
