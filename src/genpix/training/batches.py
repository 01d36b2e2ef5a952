"""Which images form the batch at step s: a pure function of (seed, step).

The index stream is the concatenation of one random permutation of the dataset per epoch;
batch s is ``stream[s * B : (s + 1) * B]``. Nothing is carried between steps, so a resumed run
(or a run split over ranks, each taking its slice of the global batch) sees exactly the
images an uninterrupted single-process run sees.
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """Seed of the global RNG during ``step`` on ``rank``: ranks other than 0 fold their rank in,
    so each draws its own values (rank 0 keeps the single-process seed)."""
    return derive_seed(seed, step, 0x57E9, *([rank] if rank else []))


def batch_noise_seed(seed: int, step: int) -> int:
    """Seed of ``Batch.generator`` during ``step``: the same on every rank, so noise drawn for
    the global batch and sliced per rank (``Batch.randn``) does not depend on the world size."""
    return derive_seed(seed, step, 0xB47C)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0xDA7A))
    return torch.randperm(n, generator=generator)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices (batch_size,) of the global batch at ``step`` over a dataset of ``n`` images."""
    start = step * batch_size
    parts, position = [], start
    while position < start + batch_size:
        epoch, offset = divmod(position, n)
        take = min(n - offset, start + batch_size - position)
        parts.append(epoch_permutation(n, seed, epoch)[offset : offset + take])
        position += take
    return torch.cat(parts)
