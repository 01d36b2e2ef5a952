"""Device choice and CPU threads; called by the CLI and the server, never at import time."""

from __future__ import annotations

import os

import torch

from genpix.errors import GenpixError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA when present, else the CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise GenpixError(f"unknown device {name!r}; choose one of: {', '.join(DEVICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenpixError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def set_cpu_threads(threads: int | None = None) -> int:
    """Use one torch thread per CPU this process may run on (or GENPIX_THREADS)."""
    if threads is None:
        env = os.environ.get("GENPIX_THREADS")
        threads = int(env) if env else len(os.sched_getaffinity(0))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()
