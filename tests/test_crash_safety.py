"""`genpix train` killed with SIGKILL at random moments, in every family (vae, gan, ddpm, autoencoder,
ldm), resumed each time: no run folder is ever unreadable, and every run ends with the weights of an
uninterrupted run, bit for bit (issue 21).

The kill moments are drawn (seeded) after the process has logged a new step, so they land inside
training steps, log writes and checkpoint writes alike (a checkpoint every step).
"""

import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genpix.io.checkpoint import read_model_dir, read_training_checkpoint

DATA = ["--data", "digits", "--limit", "64", "--quiet", "--device", "cpu", "--sample-every", "1000"]
FAMILIES = {
    "vae": [*DATA, "--image-size", "16", "--batch-size", "16", "--latent-dim", "2", "--widths", "8,16"],
    "gan": [*DATA, "--image-size", "16", "--batch-size", "16", "--width", "8", "--latent-dim", "8"],
    "ddpm": [*DATA, "--image-size", "8", "--batch-size", "8", "--base-channels", "8", "--channel-mult", "1,2",
             "--attention-levels", "1"],
    "autoencoder": [*DATA, "--image-size", "16", "--batch-size", "8", "--block-out-channels", "8,16,16",
                    "--norm-num-groups", "4", "--disc-start", "6"],
    "ldm": [*DATA, "--image-size", "16", "--batch-size", "8", "--block-out-channels", "16,32", "--head-channels",
            "8", "--norm-num-groups", "8", "--text-width", "32", "--text-layers", "1", "--text-max-length", "24"],
}
STEPS = ["--steps", "24", "--checkpoint-every", "1"]
KILLS_PER_FAMILY = 4  # 20 kill points in all
ENV = {**os.environ, "GENPIX_THREADS": "1"}


def log_lines(out: Path) -> int:
    try:
        return (out / "log.jsonl").read_bytes().count(b"\n")
    except OSError:
        return 0


def assert_readable(out: Path) -> None:
    """Every checkpoint a resume could pick is complete, and the run folder's own model loads."""
    for folder in sorted((out / "checkpoints").glob("step-*")):
        read_training_checkpoint(folder)
    if (out / "model.safetensors").exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an older config.json beside newer weights is read past
            read_model_dir(out)


def kill_somewhere(command: list[str], out: Path, rng: random.Random) -> bool:
    """Run ``command``; once it has logged 1-3 new steps (drawn), SIGKILL it after a random pause of up to
    20 ms (inside the next step, its log write or its checkpoint write). Returns whether it was killed
    (False: it finished first). Counting steps rather than seconds keeps the kills inside the run however
    fast the machine is."""
    before = log_lines(out) + rng.randint(0, 2)
    process = subprocess.Popen([sys.executable, "-m", "genpix", *command], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and log_lines(out) <= before and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.02))
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert killed or process.returncode == 0, f"{command}: {err.decode()}"
    return killed


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Run folders on tmpfs where there is one (the kills test the process, not the disk; fsync is free)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="genpix-crash-", dir=shm))
        yield folder
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    else:
        yield tmp_path_factory.mktemp("crash")


@pytest.fixture(scope="module")
def autoencoder(root):
    from genpix.cli import main

    out = root / "ae"
    assert main(["train", "autoencoder", *FAMILIES["autoencoder"], "--steps", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_sigkill_at_random_moments_then_resume_gives_identical_weights(family, root, autoencoder, run_cli):
    args = [*FAMILIES[family], *STEPS]  # a resumed ldm run keeps its autoencoder: --autoencoder only at the start
    first = args + (["--autoencoder", str(autoencoder)] if family == "ldm" else [])
    straight, out = root / f"{family}-straight", root / f"{family}-killed"
    status, _, err = run_cli("train", family, *first, "--out", straight)
    assert status == 0, err
    rng = random.Random(f"issue-21-{family}")
    kills = 0
    for _ in range(3 * KILLS_PER_FAMILY):
        resume = any((out / "checkpoints").glob("step-*"))
        command = ["train", family, *(args if resume else first), "--out", str(out)] + (["--resume"] if resume else [])
        kills += kill_somewhere(command, out, rng)
        assert_readable(out)
        if kills == KILLS_PER_FAMILY:
            break
    assert kills == KILLS_PER_FAMILY
    resume = any((out / "checkpoints").glob("step-*"))  # every kill may have come before the first one
    status, _, err = run_cli("train", family, *(args if resume else first), "--out", out,
                             *(["--resume"] if resume else []))
    assert status == 0, err
    a, b = load_file(out / "model.safetensors"), load_file(straight / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    print(f"{family}: {kills} kills survived, weights identical")
