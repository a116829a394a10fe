"""The process a run executes in: compute device, its name, the seeding of every RNG, its
memory as the kernel reports it (Linux ``/proc/self``), and whether it shows progress bars."""

from __future__ import annotations

import os
import platform
import random
import sys

import numpy as np
import torch

__all__ = ["device_name", "process_memory_kb", "progress_enabled", "reset_peak_memory",
           "resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when present, else CPU; otherwise ``torch.device(name)``.

    Raises
    ------
    ValueError
        A name torch does not know (``"tpu"``) or CUDA asked for where there is none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return device


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (the GPU model, or the CPU's)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_memory_kb(field: str) -> int:
    """A memory field of this process from ``/proc/self/status``, in KiB: ``"VmRSS"`` (resident
    set size now) or ``"VmHWM"`` (its high-water mark, since the start or the last
    :func:`reset_peak_memory`)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> None:
    """Reset this process's resident high-water mark (``VmHWM``) to its current resident size
    (Linux ``clear_refs``; raises ``OSError`` where the kernel does not offer it)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def progress_enabled(requested: bool) -> bool:
    """Whether to draw a progress bar: ``requested``, stderr is a terminal and
    ``PYRONAS_NO_PROGRESS`` is not set."""
    return bool(requested) and sys.stderr.isatty() and not os.environ.get("PYRONAS_NO_PROGRESS")
