"""Half-precision checkpoint tensors converted to float32, each source's mapped pages given back at once.

``read_state_dict`` (io/sd_checkpoint.py) maps a file privately and hands out views of the mapping.
A float16 tensor converted to float32 leaves its source pages resident (RssFile) until the whole
mapping goes, which is when the file's last tensor is dropped: after every part of a model has its
float32 copy, so the load peak would be the float32 weights plus the file. ``madvise(MADV_DONTNEED)``
on the pages lying wholly inside a converted tensor's bytes unmaps them from this process at once
(the page cache keeps them; touched again they are read back from the file, unchanged, since loading
writes to none of them), and the peak approaches the float32 weights alone.

Only ranges inside a mapping of the named file (``/proc/self/maps``) are given back: anonymous memory
would come back as zeros. Where there is no ``/proc`` or no ``madvise`` (not Linux), nothing is.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import torch

Ranges = list[tuple[int, int]]  # [start, end) addresses of one file's mappings


def file_mappings(path: str | Path) -> Ranges:
    """The address ranges of this process's mappings of ``path``; [] where /proc cannot tell."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        if len(fields) == 6 and fields[5] == target:
            start, _, end = fields[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def release_pages(tensor: torch.Tensor, mappings: Ranges) -> int:
    """Unmap the pages wholly inside ``tensor``'s bytes when they lie in ``mappings``; bytes given back."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if not mappings or advice is None or tensor.numel() == 0 or any(s < 0 for s in tensor.stride()):
        return 0
    span = (sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride())) + 1) * tensor.element_size()
    page, first = mmap.PAGESIZE, tensor.data_ptr()
    start, end = -(-first // page) * page, (first + span) // page * page  # pages shared with neighbours stay
    if end <= start or not any(lo <= start and end <= hi for lo, hi in mappings):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return end - start if libc.madvise(start, end - start, advice) == 0 else 0


def float32_state(state: dict[str, torch.Tensor], source: str | Path | None = None) -> dict[str, torch.Tensor]:
    """``state`` with its floating-point tensors as contiguous float32 (contiguous float32 ones and
    integer ones as they are: still mapped), each copied source's pages of the file ``source`` given back."""
    mappings = file_mappings(source) if source is not None else []
    converted = {}
    for key, tensor in state.items():
        converted[key] = tensor.float().contiguous() if tensor.is_floating_point() else tensor
        if converted[key] is not tensor:
            release_pages(tensor, mappings)
    return converted
