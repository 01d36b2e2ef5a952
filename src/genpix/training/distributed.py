"""Training under ``torchrun``: the process group, each rank's share of the global batch, and DDP.

genpix starts no workers of its own. ``torchrun`` (``torch.distributed.run``) launches one
process per GPU (or per CPU slot) on every machine, each running the same ``genpix train``
command with the rendezvous variables below set; :func:`setup` joins them into one process
group (NCCL on CUDA, gloo on the CPU). The trainer then gives rank r the rows
``[r * B/W, (r + 1) * B/W)`` of the global batch of ``B`` images that a single process would
take at that step (:func:`rank_rows`), and the task routes its forward passes through
:class:`~torch.nn.parallel.DistributedDataParallel` (:func:`ddp_wrapper`), which averages the
gradients over the W ranks. With a loss that is a mean over the batch, the average of the W
per-rank means is the single-process mean, so every rank takes the single-process step.
"""

from __future__ import annotations

import os
import re
import signal
from datetime import timedelta
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist
from torch import nn

from genpix.device import resolve_device
from genpix.errors import GenpixError
from genpix.training.sync_batchnorm import to_global_batchnorm, to_local_batchnorm

Backend = Literal["auto", "gloo", "nccl"]
RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun
LAUNCH = ("launch it with `torchrun --nproc_per_node N -m genpix train ...` "
          "(or `genpix train ... --nproc N` on one machine)")
DEFAULT_TIMEOUT_S = 1800.0  # torch's own default; rank 0's sample grids and checkpoints must fit in it


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def describe(global_batch: int) -> dict[str, Any]:
    """The ``distributed`` section of config.json: how the run's global batch was split."""
    rank, world = rank_and_world()
    return {"world_size": world, "global_batch_size": global_batch,
            "batch_size_per_process": global_batch // world,
            "backend": dist.get_backend() if world > 1 else None}


def rank_rows(global_batch: int, rank: int, world: int) -> slice:
    """Rows of the global batch that ``rank`` trains on: a contiguous 1/world share."""
    if global_batch % world:
        lower = global_batch - global_batch % world
        hint = f"{lower} or {lower + world}" if lower else f"{world}"
        raise GenpixError(f"--batch-size {global_batch} is the global batch and must split evenly over "
                          f"{world} processes; use a multiple of {world} (e.g. {hint})")
    share = global_batch // world
    return slice(rank * share, (rank + 1) * share)


def choose_backend(backend: Backend, device: torch.device) -> str:
    """NCCL for CUDA and gloo for the CPU unless asked; NCCL on the CPU is refused."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise GenpixError("--dist-backend nccl runs on CUDA GPUs only, and this run is on the CPU "
                          "(--device cpu or no GPU); use --dist-backend gloo")
    if backend == "nccl" and not dist.is_nccl_available():
        raise GenpixError("--dist-backend nccl: this torch build has no NCCL; use --dist-backend gloo")
    return backend


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return any(name in os.environ for name in RENDEZVOUS)


def world_size() -> int:
    """Processes in the whole job as torchrun announces them (WORLD_SIZE); 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise GenpixError(f"WORLD_SIZE must be a whole number, got {os.environ['WORLD_SIZE']!r}; "
                          f"{LAUNCH}") from None


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE); 1 outside torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def setup(device: str = "auto", backend: Backend = "auto",
          timeout_s: float = DEFAULT_TIMEOUT_S) -> torch.device:
    """Join the torchrun job this process belongs to and return its device.

    Without torchrun's variables (and no ``backend`` asked for) this is a single-process run and
    only resolves ``device``. Under torchrun rank r uses ``cuda:LOCAL_RANK`` on GPUs. Every
    collective (the gradient all-reduce, the metric average) fails after ``timeout_s`` seconds
    instead of waiting forever for a rank that died.
    """
    resolved = resolve_device(device)
    chosen = choose_backend(backend, resolved)
    if not launched() and backend == "auto":
        return resolved
    missing = [name for name in RENDEZVOUS if name not in os.environ]
    if missing:
        raise GenpixError(f"distributed training needs the rendezvous variables torchrun sets "
                          f"({', '.join(missing)} missing); {LAUNCH}")
    try:
        rank, world, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise GenpixError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers; " + LAUNCH) from None
    if not 0 <= rank < world:
        raise GenpixError(f"RANK {rank} is outside 0..{world - 1} (WORLD_SIZE {world}); {LAUNCH}")
    if resolved.type == "cuda":
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:
            raise GenpixError(f"local rank {local_rank} has no GPU: this machine has {gpus}; start at most "
                              f"{gpus} processes per machine (--nproc_per_node), or use --device cpu")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if world > 1:
        try:
            dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_s))
        except dist.DistError as error:
            raise GenpixError(f"rank {rank} could not join the other {world - 1} process(es) at "
                              f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within "
                              f"{timeout_s:g} s ({first_line(error)}); {LAUNCH}") from None
    return resolved


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def first_line(error: BaseException) -> str:
    """The error's first line, without gloo's ``[.../pair.cc:553]`` source prefix."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", line).split(" This is typically")[0]


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` says a collective failed (a peer died or timed out), not a bug of ours:
    NCCL raises DistError, gloo a RuntimeError naming its transport or the timeout."""
    markers = ("gloo", "NCCL", "Connection closed by peer", "Timed out", "timeout", "pair closure")
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in markers))


def cpu_threads_per_rank() -> int | None:
    """Torch threads for each of this machine's ranks on the CPU (its cores shared evenly), or
    None to keep genpix's usual choice (GENPIX_THREADS, else every core)."""
    if os.environ.get("GENPIX_THREADS") or local_world_size() <= 1:
        return None
    return max(1, len(os.sched_getaffinity(0)) // local_world_size())


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over all ranks (a copy; the input is left alone)."""
    rank, world = rank_and_world()
    if world == 1:
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total / world


def barrier(device: torch.device) -> None:
    if rank_and_world()[1] > 1:
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


class _MethodAsForward(nn.Module):
    """Presents ``module.<method>`` as ``forward``, so DDP sees (and hooks) the call."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


def ddp_wrapper(device: torch.device) -> Callable[..., Callable[..., Any]]:
    """``wrap(module, method="forward")`` for :meth:`Task.distribute`: the returned callable runs
    ``module.<method>`` through DistributedDataParallel, whose backward all-reduces (averages)
    the gradients of ``module``'s parameters over the ranks. A module with no trainable
    parameters (e.g. an EMA copy or a frozen encoder) comes back as the plain method.

    BatchNorm: ``module``'s ``BatchNorm2d`` layers become ``GlobalBatchNorm2d`` (in place,
    the same tensors), which normalise with the statistics of the global batch, so a DCGAN on N
    processes takes the single-process step too; :func:`unwrapped` turns them back.
    """
    wrapped: set[int] = set()

    def wrap(module: nn.Module, method: str = "forward") -> Callable[..., Any]:
        if not any(p.requires_grad for p in module.parameters()):
            return getattr(module, method)
        if id(module) in wrapped:
            raise GenpixError(f"{type(module).__name__} wrapped twice for DDP; wrap each network once")
        wrapped.add(id(module))
        to_global_batchnorm(module)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(_MethodAsForward(module, method), device_ids=ids)

    return wrap


def unwrapped(module: nn.Module, method: str = "forward") -> Callable[..., Any]:
    """The counterpart of :func:`ddp_wrapper`: ``module.<method>`` itself, with plain batch norm."""
    return getattr(to_local_batchnorm(module), method)


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``genpix ARGV`` on ``nproc`` processes of this machine under torchrun (``--standalone``:
    a private rendezvous on a free port); returns 0, or raises when a process failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nproc)))
    config = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "genpix"])
    config.training_script_args = list(argv)  # set, not parsed: torchrun's parser would read our flags
    try:
        run(config)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        how = (f"was killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0
               else f"failed with exit status {failure.exitcode} (its message is above)")
        raise GenpixError(f"training stopped: rank {rank} of {nproc} {how}, "
                          f"so the other processes were stopped") from None
    except SignalException as error:  # torchrun turns SIGINT / SIGTERM into this, after stopping the workers
        raise GenpixError(f"training stopped by {error.sigval.name}; all {nproc} processes were stopped") from None
    return 0
