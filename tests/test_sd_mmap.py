"""Checkpoint files are memory-mapped, not copied: what io/sd_checkpoint.py's ``read_state_dict``
promises about memory, dtypes and malformed safetensors headers.

safetensors' ``load_file`` maps the file privately (copy-on-write) and hands out views of the
mapping; ``assign_weights`` then uses float32 tensors as they are and converts float16/bfloat16
once. The memory test runs in a fresh interpreter and reads /proc/self/status: after every byte of
a 192 MiB float32 file has been read, the process's anonymous memory (RssAnon) must have grown by
far less than the file, its pages being counted as file-backed (RssFile) instead.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genpix.io.checkpoint import CheckpointError
from genpix.io.sd_checkpoint import read_state_dict
from genpix.io.sd_loader import assign_weights

MIB = 2**20


def mixed_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w32": torch.randn(16, 8, generator=g), "w16": torch.randn(5, 3, generator=g).half(),
            "wbf16": torch.randn(7, generator=g).bfloat16(), "ids": torch.arange(77)[None],
            "scalar": torch.tensor(2.5)}


def test_every_tensor_and_dtype_as_safetensors_reads_it(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file(mixed_tensors(), path, metadata={"format": "pt", "note": "genpix"})
    ours, theirs = read_state_dict(path), load_file(path)
    assert sorted(ours) == sorted(theirs) == sorted(mixed_tensors())
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), key


def test_float32_is_assigned_as_mapped_and_half_precision_converted_once(tmp_path):
    path = tmp_path / "linear.safetensors"
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    save_file({"weight": weight, "bias": bias.bfloat16()}, path)
    state = read_state_dict(path)
    linear = assign_weights(lambda _: torch.nn.Linear(3, 4), None, state, str(path))
    assert linear.weight.data_ptr() == state["weight"].data_ptr()  # the mapped tensor itself: no copy
    assert linear.bias.dtype == torch.float32 and torch.equal(linear.bias, bias.bfloat16().float())
    with torch.no_grad():
        linear.weight.add_(1.0)  # the mapping is private: parameters are writable, the file unchanged
    assert torch.equal(read_state_dict(path)["weight"], weight)


def write_raw(path: Path, header: dict | bytes, body: bytes, length: int | None = None) -> Path:
    """A safetensors file by hand: 8-byte little-endian header length, JSON header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + body)
    return path


def f32(offsets: list[int], shape: list[int], dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


BAD_HEADERS = {
    "length past the end": ({"x": f32([0, 8], [2])}, b"\0" * 8, 10**6),
    "offsets past the data": ({"x": f32([0, 16], [4])}, b"\0" * 8, None),
    "overlapping tensors": ({"x": f32([0, 8], [2]), "y": f32([4, 12], [2])}, b"\0" * 12, None),
    "unknown dtype": ({"x": f32([0, 8], [2], dtype="Q7")}, b"\0" * 8, None),
    "shape against offsets": ({"x": f32([0, 8], [3])}, b"\0" * 8, None),
    "bytes no tensor covers": ({"x": f32([0, 8], [2])}, b"\0" * 16, None),
    "not JSON": (b"{not}", b"", None),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_malformed_headers_are_one_error_naming_the_file(tmp_path, case):
    header, body, length = BAD_HEADERS[case]
    path = write_raw(tmp_path / "bad.safetensors", header, body, length)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors is not a readable safetensors file"):
        read_state_dict(path)


def test_a_file_shorter_than_its_length_field_is_refused(tmp_path):
    path = tmp_path / "stub.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=r"stub\.safetensors is not a readable safetensors file"):
        read_state_dict(path)


# run in a fresh interpreter: RssAnon / RssFile (KiB) before and after reading every tensor
MEMORY_CHILD = """
import json, sys
from genpix.io.sd_checkpoint import read_state_dict
def status():
    return {k: int(v.split()[0]) for k, _, v in (l.partition(":") for l in open("/proc/self/status"))
            if k in ("RssAnon", "RssFile")}
before = status()
state = read_state_dict(sys.argv[1])
total = sum(float(t.sum()) for t in state.values())  # reads every page
print(json.dumps({"before": before, "after": status(), "total": total}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's /proc/self/status")
def test_reading_a_large_float32_file_costs_no_anonymous_memory(tmp_path):
    path = tmp_path / "large.safetensors"
    save_file({f"w{i}": torch.full((1024, 4096), float(i)) for i in range(12)}, path)  # 12 x 16 MiB
    size = path.stat().st_size
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(path)], capture_output=True, text=True,
                           check=True)
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["total"] == pytest.approx(sum(i * 1024 * 4096 for i in range(12)))
    anonymous = (report["after"]["RssAnon"] - report["before"]["RssAnon"]) * 1024
    mapped = (report["after"]["RssFile"] - report["before"]["RssFile"]) * 1024
    assert anonymous < size / 8, f"RssAnon grew {anonymous / MIB:.0f} MiB for a {size / MIB:.0f} MiB file"
    assert mapped > size / 2, f"RssFile grew only {mapped / MIB:.0f} MiB: the file was not mapped"
