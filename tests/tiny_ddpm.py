"""The tiny diffusion model the tests share: `genpix train ddpm` arguments that train in seconds (8x8 digits,
a two-level U-Net of 8 channels) and one class-conditional run of them, trained once per test session.

Use the session fixture ``tiny_ddpm`` (tests/conftest.py), or :func:`copy_tiny_ddpm` where a fixture
cannot reach (tests/server_harness.py). The run folder is shared: copy it before changing anything in it.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

TINY_DDPM = ["--data", "digits", "--image-size", "8", "--limit", "64", "--batch-size", "8", "--base-channels", "8",
             "--channel-mult", "1,2", "--attention-levels", "1", "--quiet", "--device", "cpu", "--sample-every", "100"]

# the shared run: classes "0".."9", T = 100; four steps at a high rate with no warm-up, so the network is
# far from its zero-initialised output layer (samplers and schedules give visibly different images)
SHARED_RUN = [*TINY_DDPM, "--cond", "class", "--steps", "4", "--timesteps", "100", "--lr", "0.01",
              "--warmup-steps", "0"]

_runs: list[Path] = []


def tiny_ddpm_run() -> Path:
    """The shared run folder, trained on the first call of the session (in a temporary folder removed at exit)."""
    if not _runs:
        from genpix.cli import main

        root = Path(tempfile.mkdtemp(prefix="genpix-tiny-ddpm-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        assert main(["train", "ddpm", *SHARED_RUN, "--out", str(root / "run")]) == 0
        _runs.append(root / "run")
    return _runs[0]


def copy_tiny_ddpm(dest: Path) -> Path:
    """A private copy of the shared run at ``dest`` (a model folder: config.json, model.safetensors, ...)."""
    shutil.copytree(tiny_ddpm_run(), dest)
    return dest
