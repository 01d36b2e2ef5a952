"""Training under torchrun: real processes on this CPU with the gloo backend, each family at tiny sizes.

For every family one 2-process run (4 steps; tests/ddp_worker.py records each rank's whole state
after every step) and one single-process run of the same command (6 steps, in this process) back
the checks on weights, files and resume. The 2-process run must take the single-process steps to
float32 rounding: the same global batch split over the ranks, the same per-image noise
(``Batch.randn``/``rand``), gradients averaged by DDP, batch-norm statistics over the global batch.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # real torchrun processes

COMMON = ["--data", "digits", "--image-size", "16", "--limit", "256", "--batch-size", "16", "--quiet",
          "--device", "cpu", "--checkpoint-every", "2", "--sample-every", "2"]
FAMILIES = {
    "vae": ["--latent-dim", "2", "--widths", "8,16"],
    # batch norm in G and D, class labels drawn per image, R1's gradient of D (a double backward)
    "gan": ["--latent-dim", "8", "--width", "8", "--cond", "class", "--stabiliser", "r1",
            "--diagnostics-every", "1000"],
    # t, eps and label dropout drawn per image; the EMA copy beside the wrapped U-Net; a constant
    # LR, as the 4- and 6-step runs' cosine schedules would differ
    "ddpm": ["--base-channels", "8", "--channel-mult", "1,2", "--attention-levels", "1", "--cond", "class",
             "--warmup-steps", "0", "--lr-schedule", "constant"],
}
PICTURES = {"vae": ("reconstructions", "samples"), "gan": ("samples",), "ddpm": ("samples",)}
# largest |difference| allowed between weights on 2 processes and on 1 (after 4 steps, and after a
# 2-process run resumed in one process at 6): float32 rounding of the sums (taken in another order),
# which Adam's update g / (sqrt(v) + 1e-8) magnifies where a gradient is near 1e-8. Measured: 3e-8
# (VAE), 2e-7 (GAN), 2.4e-5 and 4.9e-5 (DDPM, whose zero-initialised output layer makes the early
# gradients tiny; one process on 1 thread against 2 threads differs by 1.7e-5 after 4 steps too)
ATOL = {"vae": 1e-6, "gan": 1e-6, "ddpm": 2e-4}
TINY = [*COMMON, *FAMILIES["vae"]]
WORKER = str(Path(__file__).with_name("ddp_worker.py"))
ENV = {**os.environ, "GENPIX_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class Runs:
    family: str
    two: Path  # the 2-process run folder (4 steps, checkpoints at 2 and 4)
    one: Path  # the 1-process run folder (6 steps, checkpoints kept at 4 and 6)
    seen: dict[int, dict]  # rank -> {"state": (4, N) after each step, "checkpoints": written}


@pytest.fixture(scope="module", params=list(FAMILIES))
def runs(request, tmp_path_factory) -> Runs:
    from genpix.cli import main

    family = request.param
    root = tmp_path_factory.mktemp(f"ddp-{family}")
    two, one, seen = root / "two", root / "one", root / "seen"
    seen.mkdir()
    args = ["train", family, *COMMON, *FAMILIES[family]]
    ddp = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            WORKER, str(seen), *args, "--steps", "4", "--out", str(two)],
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = main([*args, "--steps", "6", "--out", str(one)])  # meanwhile, here in one process
        output = ddp.communicate(timeout=180)[0]
    finally:
        ddp.kill()
    assert ddp.returncode == 0, output
    assert status == 0
    return Runs(family, two, one, {rank: torch.load(seen / f"rank-{rank}.pt") for rank in (0, 1)})


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=0, atol=atol), \
            f"{key}: max difference {(a[key].double() - b[key].double()).abs().max():.3g}"


def test_both_ranks_hold_identical_weights_after_every_step(runs):
    rank0, rank1 = runs.seen[0]["state"], runs.seen[1]["state"]
    assert rank0.shape[0] == rank1.shape[0] == 4
    for step in range(4):  # parameters, EMA copy and batch-norm statistics, bit for bit
        assert torch.equal(rank0[step], rank1[step]), f"ranks differ after step {step + 1}"
    assert not torch.allclose(rank0[0], rank0[3])  # the steps did move the weights


def test_two_processes_take_the_single_process_steps(runs):
    # the same global batch and noise per image: the same weights after 4 steps, to float32 rounding
    step_4 = "checkpoints/step-00000004/model.safetensors"
    assert_close(load_file(runs.two / step_4), load_file(runs.one / step_4), ATOL[runs.family])


def test_only_rank_0_writes_logs_pictures_and_checkpoints(runs):
    two = runs.two
    assert runs.seen[0]["checkpoints"] == 2 and runs.seen[1]["checkpoints"] == 0
    steps = [json.loads(line)["step"] for line in (two / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert sorted(p.name for p in (two / "samples").iterdir()) == [
        f"{name}-{step:08d}.png" for name in PICTURES[runs.family] for step in (2, 4)]
    config = json.loads((two / "config.json").read_text())
    assert config["distributed"] == {"world_size": 2, "global_batch_size": 16, "batch_size_per_process": 8,
                                     "backend": "gloo"}
    assert config["train"]["batch_size"] == 16


def test_resume_in_one_process_continues_the_two_process_run(runs, run_cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.two, run)
    status, out, err = run_cli("train", runs.family, "--out", run, "--resume", "--steps", "6", "--quiet",
                               "--device", "cpu")
    assert status == 0, err
    assert_close(load_file(run / "model.safetensors"), load_file(runs.one / "model.safetensors"),
                 ATOL[runs.family])
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "config.json").read_text())["distributed"]["world_size"] == 1


def test_global_batch_norm_keeps_the_tensors_and_is_plain_batch_norm_in_one_process():
    from genpix.models.gan import Discriminator, GANConfig
    from genpix.training.sync_batchnorm import GlobalBatchNorm2d, to_global_batchnorm, to_local_batchnorm

    torch.manual_seed(0)
    d = Discriminator(GANConfig(image_size=16, width=4))
    before = {k: v.data_ptr() for k, v in d.state_dict().items()}
    x = torch.randn(6, 1, 16, 16)
    plain = d(x)
    to_global_batchnorm(d)
    assert any(isinstance(m, GlobalBatchNorm2d) for m in d.modules())
    assert {k: v.data_ptr() for k, v in d.state_dict().items()} == before  # what the optimiser holds
    torch.testing.assert_close(d(x), plain, rtol=0, atol=1e-6)  # no process group: batch norm as before
    to_local_batchnorm(d)
    assert not any(isinstance(m, GlobalBatchNorm2d) for m in d.modules())
    assert {k: v.data_ptr() for k, v in d.state_dict().items()} == before


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
