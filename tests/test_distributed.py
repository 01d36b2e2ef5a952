"""Training under torchrun: real processes on this CPU with the gloo backend, a tiny VAE at 16 px.

One 2-process run and one 1-process run of the same command (tests/ddp_worker.py records the
weights after every step on every rank) back the checks on weights, files and resume.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY = ["--data", "digits", "--image-size", "16", "--limit", "256", "--batch-size", "16",
        "--latent-dim", "2", "--widths", "8,16", "--quiet", "--device", "cpu", "--checkpoint-every", "2",
        "--sample-every", "2"]
WORKER = str(Path(__file__).with_name("ddp_worker.py"))
ENV = {**os.environ, "GENPIX_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(2-process run folder, 1-process run folder, observations dir): 4 steps on 2 ranks
    (checkpoints at 2 and 4) and 6 steps in one process, started side by side."""
    root = tmp_path_factory.mktemp("ddp")
    two, one, seen_two, seen_one = root / "two", root / "one", root / "seen-two", root / "seen-one"
    seen_two.mkdir(), seen_one.mkdir()
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            WORKER, str(seen_two), "train", "vae", *TINY, "--steps", "4", "--out", str(two)],
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = subprocess.run([sys.executable, WORKER, str(seen_one), "train", "vae", *TINY, "--steps", "6",
                             "--out", str(one)], env=ENV, capture_output=True, text=True, timeout=120)
    output = ddp.communicate(timeout=120)[0]
    assert ddp.returncode == 0, output
    assert single.returncode == 0, single.stderr
    seen = {"two-0": seen_two / "rank-0.pt", "two-1": seen_two / "rank-1.pt", "one-0": seen_one / "rank-0.pt"}
    return two, one, {name: torch.load(path) for name, path in seen.items()}


def test_both_ranks_hold_identical_weights_after_every_step(runs):
    _, _, seen = runs
    rank0, rank1 = seen["two-0"]["params"], seen["two-1"]["params"]
    assert rank0.shape[0] == rank1.shape[0] == 4
    for step in range(4):
        assert torch.equal(rank0[step], rank1[step]), f"ranks differ after step {step + 1}"
    assert not torch.allclose(rank0[0], rank0[3])  # the steps did move the weights


def test_two_processes_take_the_single_process_steps(runs):
    _, _, seen = runs
    two, one = seen["two-0"]["params"], seen["one-0"]["params"][:4]
    for step in range(4):  # same global batch, same noise per image: the same step to float32 rounding
        assert torch.allclose(two[step], one[step], rtol=0, atol=1e-6), f"step {step + 1}"


def test_only_rank_0_writes_logs_pictures_and_checkpoints(runs):
    two, _, seen = runs
    assert seen["two-0"]["checkpoints"] == 2 and seen["two-1"]["checkpoints"] == 0
    steps = [json.loads(line)["step"] for line in (two / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert sorted(p.name for p in (two / "samples").iterdir()) == [
        "reconstructions-00000002.png", "reconstructions-00000004.png", "samples-00000002.png",
        "samples-00000004.png"]
    config = json.loads((two / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "global_batch_size": 16, "batch_size_per_process": 8,
                                     "backend": "gloo"}
    assert config["train"]["batch_size"] == 16


def test_resume_in_one_process_continues_the_two_process_run(runs, run_cli, tmp_path):
    two, one, _ = runs
    run = tmp_path / "run"
    shutil.copytree(two, run)
    status, out, err = run_cli("train", "vae", "--out", run, "--resume", "--steps", "6", "--quiet",
                               "--device", "cpu")
    assert status == 0, err
    resumed, straight = load_file(run / "model.safetensors"), load_file(one / "model.safetensors")
    assert resumed.keys() == straight.keys()
    for key in resumed:
        assert torch.allclose(resumed[key], straight[key], rtol=0, atol=1e-6), key
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "config.json").read_text())["distributed"]["world_size"] == 1


def test_a_killed_rank_stops_the_whole_job(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genpix", "train", "vae", *TINY, "--steps", "100000",
                             "--nproc", "2", "--out", str(out)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not ((out / "log.jsonl").is_file() and (out / "log.jsonl").stat().st_size):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(workers) == 2
        os.kill(int(workers[1]), 9)
        killed = time.time()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1 and time.time() - killed < 15
    assert re.search(r"genpix: error: training stopped: rank \d of 2 was killed by SIGKILL, so the other "
                     r"processes were stopped", err), err


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_waits_for_missing_peers_only_until_the_timeout(run_cli, monkeypatch, tmp_path):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    tic = time.time()
    status, _, err = run_cli("train", "vae", *TINY, "--steps", "2", "--out", tmp_path / "run", "--dist-timeout", "1")
    assert status == 1 and time.time() - tic < 30
    assert "rank 0 could not join the other 1 process(es) at 127.0.0.1:" in err and "within 1 s" in err


@pytest.mark.parametrize("env, flags, message", [
    ({}, ["--nproc", "3"], "--batch-size 16 is the global batch and must split evenly over 3 processes; "
                           "use a multiple of 3 (e.g. 15 or 18)"),
    ({"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, [],
     "must split evenly over 3 processes"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, [], "rendezvous variables torchrun sets (LOCAL_RANK, MASTER_ADDR, "
                                           "MASTER_PORT missing); launch it with `torchrun --nproc_per_node N"),
    ({}, ["--dist-backend", "gloo"], "(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing)"),
    ({}, ["--dist-backend", "nccl"], "--dist-backend nccl runs on CUDA GPUs only, and this run is on the CPU "
                                     "(--device cpu or no GPU); use --dist-backend gloo"),
    ({}, ["--dist-timeout", "0"], "--dist-timeout must be positive"),
])
def test_bad_distributed_input_is_one_clear_line(run_cli, monkeypatch, tmp_path, env, flags, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status, _, err = run_cli("train", "vae", *TINY, "--steps", "2", "--out", tmp_path / "run", *flags)
    assert status == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_help_says_the_batch_is_global(run_cli):
    status, out, _ = run_cli("train", "vae", "--help")
    assert status == 0
    text = " ".join(out.split())
    assert "the global batch, split evenly over them" in text and "--nproc N" in text and "--dist-timeout" in text
