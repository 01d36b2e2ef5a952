"""Checkpoints are atomic and a resumed run reaches the same weights as an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

TINY = ["--data", "digits", "--image-size", "16", "--limit", "256", "--batch-size", "16",
        "--latent-dim", "2", "--widths", "8,16", "--quiet", "--device", "cpu"]


def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_reaches_the_weights_of_an_uninterrupted_run(tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli("train", "vae", *TINY, "--steps", "12", "--checkpoint-every", "4", "--out", straight)[0] == 0
    assert run_cli("train", "vae", *TINY, "--steps", "8", "--checkpoint-every", "4", "--out", split)[0] == 0
    assert not torch.equal(weights(split)["vae.to_mu.weight"], weights(straight)["vae.to_mu.weight"])
    status, out, err = run_cli("train", "vae", "--out", split, "--resume", "--steps", "12", "--quiet",
                               "--device", "cpu")
    assert status == 0, err
    assert_same(weights(split), weights(straight))
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (split / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


@pytest.mark.slow  # a training killed and resumed at many moments
def test_sigkill_at_any_moment_then_resume(tmp_path, run_cli):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = [*TINY, "--steps", "150", "--checkpoint-every", "3", "--sample-every", "1000"]
    assert run_cli("train", "vae", *args, "--out", straight)[0] == 0
    env = {**os.environ, "GENPIX_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genpix", "train", "vae", *args, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (killed / "checkpoints").is_dir():
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the middle of training, maybe mid-checkpoint
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # no half-written checkpoint is ever visible under its final name
    for folder in (killed / "checkpoints").iterdir():
        if not folder.name.startswith("."):
            assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors",
                                                           "optimizer.safetensors", "state.json"}
    steps_done = max(int(p.name[5:]) for p in (killed / "checkpoints").glob("step-*"))
    assert 0 < steps_done < 150
    status, _, err = run_cli("train", "vae", "--out", killed, "--resume", "--quiet", "--device", "cpu")
    assert status == 0, err
    assert_same(weights(killed), weights(straight))


def test_resume_skips_a_corrupt_latest_checkpoint(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "vae", *TINY, "--steps", "8", "--checkpoint-every", "4", "--out", out)[0] == 0
    (out / "checkpoints" / "step-00000008" / "model.safetensors").write_bytes(b"garbage")
    status, _, err = run_cli("train", "vae", "--out", out, "--resume", "--steps", "8", "--quiet")
    assert status == 0, err
    assert "skipped unreadable checkpoint(s): step-00000008" in err


def test_training_twice_into_one_folder_needs_resume(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "vae", *TINY, "--steps", "2", "--out", out)[0] == 0
    status, _, err = run_cli("train", "vae", *TINY, "--steps", "2", "--out", out)
    assert status == 1 and "pass --resume" in err
    status, _, err = run_cli("train", "vae", "--out", out, "--resume", "--latent-dim", "3")
    assert status == 1 and "--latent-dim 3 differs" in err
