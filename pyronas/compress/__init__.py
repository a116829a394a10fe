"""Network compression by structured sparsity: small networks, physical pruning, baselines.

``networks`` builds the compressed networks (LeNet-300-100, LeNet-5, a small VGG) and lists their
prunable layers; ``surgery`` rebuilds a physically smaller network from per-layer alive masks;
``baselines`` prunes by weight magnitude (global unstructured, structured by unit norm).
``run`` is a compression run (the group-HARD prior in the type-II engine, then surgery and
fine-tuning); ``cli`` its ``pyronas compress`` command.
"""

from pyronas.compress.run import CompressResult, CompressSettings, run_compress

__all__ = ["CompressResult", "CompressSettings", "run_compress"]
